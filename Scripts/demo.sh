#!/usr/bin/env bash
# Renders the demo job end to end on a fresh machine (set-up included), with nothing beside the checkout:
#   1. Scripts/setup.sh installs what is missing (Debian packages; the demo itself needs no Python);
#   2. a release build of dp-worker and dp-coord;
#   3. `dp-coord submit` renders the held-out demo dance (Scripts/demo/case: 24 poses of a dance the model was
#      never trained on, made by Scripts/demo/synth.py --seed 7) with the trained demo model
#      (Scripts/demo/model, made by Scripts/demo/train.py) on the embedded farm: an in-process coordinator +
#      2 local workers over ZeroMQ on 127.0.0.1, journal in demo/out/.dp-state. Out come
#      demo/out/frame_<n>.png, manifest.json and demo/out/demo.mp4.
# Scripts/demo/case/truth holds what each frame should look like; `dp-bench quality` measures the difference
# and Scripts/demo/contact_sheet.py draws truth over rendered frames (README, "The demo").
# Extra arguments go to `dp-coord submit` (e.g. --workers 1 --steps 10 --sampler ddim --json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DP_SETUP_SKIP_PIP="${DP_SETUP_SKIP_PIP:-1}" Scripts/setup.sh   # the demo needs no Python
swift build -c release --product dp-worker
swift build -c release --product dp-coord
BIN="$(swift build -c release --show-bin-path)"

OUT="${DP_DEMO_DIR:-$ROOT/demo}"
CASE="$ROOT/Scripts/demo/case"
for f in "$ROOT/Scripts/demo/model/dreampose.json" "$CASE/subject.png" "$CASE/poses/frame_0_densepose.npy"; do
  [[ -f "$f" ]] || { echo "demo: $f is missing (it is part of the checkout)" >&2; exit 1; }
done
rm -rf "$OUT/out"
"$BIN/dp-coord" submit --model "$ROOT/Scripts/demo/model" --subject "$CASE/subject.png" \
    --poses "$CASE/poses" --out "$OUT/out" --video "$OUT/out/demo.mp4" --workers 2 "$@"
echo "demo: frames, manifest.json and demo.mp4 in $OUT/out (truth frames: $CASE/truth)" >&2
