#!/usr/bin/env bash
# Benchmarks of record: dp-farm's UNet forward (batch 3, 80 x 64 latent) and VAE decode (640 x 512) against
# PyTorch eager and OpenVINO on this CPU, interleaved A B C A B C in one run (Scripts/bench/compare.py).
#
#   Scripts/bench_compare.sh [--rounds 3] [--threads 2] [--networks unet,vae]
#                            [--runtimes "dp-farm;torch;openvino"] [--force] [--json-out FILE] [--log FILE]
#
# A runtime "dp-farm:DP_CONV3X3=im2col" is dp-bench with that environment (an A/B of a kernel choice).
#
# Needs a quiet machine (1-minute load average under 0.5; checked). Installs what it needs: the release
# dp-bench (swift build), and the Python packages torch==2.13.0+cpu (local wheel folder), diffusers, openvino.
# Memory: the three UNet processes hold ~4 GB each; OpenVINO's conversion peaks at ~12 GB on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch, diffusers, openvino" 2>/dev/null; then
  echo "bench_compare.sh: installing torch==2.13.0+cpu diffusers openvino" >&2
  wheels=()
  [[ -d "${DP_WHEELS:-/opt/wheels}" ]] && wheels=(--find-links "${DP_WHEELS:-/opt/wheels}")
  "$PYTHON" -m pip install -q "${wheels[@]}" "torch==2.13.0+cpu" diffusers openvino >&2
fi
swift build -c release --product dp-bench >&2
exec "$PYTHON" Scripts/bench/compare.py --dp-bench "$ROOT/.build/release/dp-bench" "$@"
