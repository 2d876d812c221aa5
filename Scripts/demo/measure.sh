#!/usr/bin/env bash
# Measures a trained demo model (default Scripts/demo/model) on the held-out demo dance (Scripts/demo/case):
# engine-vs-PyTorch parity on one frame, the default sampler on all 24 frames (saved for the contact sheet),
# and the sampler / guidance table of PERF.md "Image quality of the demo model" (frames 0-3, to keep it short).
# Needs release builds of dp-worker and dp-bench, and python3 with torch, diffusers, transformers, Pillow.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
M="${1:-Scripts/demo/model}"; C=Scripts/demo/case
OUT="${DP_MEASURE_OUT:-$ROOT/demo/quality}"
BIN="$(swift build -c release --show-bin-path)"
echo "== parity (engine vs PyTorch, DPM-Solver++ 20 steps, frame 5)"
python3 Scripts/demo/parity.py --model "$M" --case "$C" --frame 5 --worker "$BIN/dp-worker" --sampler dpm --steps 20 2>&1 | tail -1
echo "== the model's defaults, all frames"
"$BIN/dp-bench" quality --model "$M" --case "$C" --threads 2 --save "$OUT/frames"
python3 Scripts/demo/contact_sheet.py --truth "$C/truth" --rendered "$OUT/frames" --out "$OUT/contact_sheet.png"
echo "== the regression test's setting (DPM-Solver++ 10 steps, frames 4 and 15)"
"$BIN/dp-bench" quality --model "$M" --case "$C" --frames 4,15 --sampler dpm --steps 10 --threads 2
echo "== sampler / guidance table (frames 0-3)"
python3 Scripts/demo/quality_table.py --bench "$BIN/dp-bench" --model "$M" --case "$C" --frames 0-3 --threads 2 \
  pndm:100:1:1 ddim:50:1:1 dpm:25:1:1 dpm:20:1:1 dpm:15:1:1 dpm:10:1:1 \
  dpm:20:2:1.5 dpm:20:1:2 dpm:20:2.5:1.5 dpm:20:8:3
