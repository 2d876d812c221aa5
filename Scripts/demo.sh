#!/usr/bin/env bash
# Renders the demo end to end on a fresh machine (set-up included).
#
# For now the demo is the parity run over the golden unit case: `dp-bench parity` runs the engine's UNet,
# VAE, CLIP and schedulers on ../shared/golden/unit-a1 and prints how far each result is from the
# diffusers/transformers reference numbers. Extra arguments go to dp-bench.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

Scripts/setup.sh
CASE="${DP_DEMO_CASE:-$ROOT/../shared/golden/unit-a1}"
[[ -d "$CASE" ]] || { echo "demo.sh: golden case $CASE not found (../shared beside the checkout)" >&2; exit 1; }
exec swift run -c release dp-bench parity "$CASE" "$@"
