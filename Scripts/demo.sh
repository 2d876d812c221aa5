#!/usr/bin/env bash
# Renders the demo job end to end on a fresh machine (set-up included), with nothing beside the checkout:
#   1. Scripts/setup.sh installs what is missing (Debian packages, Python packages for the converter);
#   2. a release build of dp-worker and dp-coord;
#   3. `dp-worker demo-assets` writes a tiny dreampose-model/1 folder with SEEDED RANDOM weights, a synthetic
#      subject photo and 8 synthetic DensePose maps into demo/assets (reused on later runs);
#   4. `dp-coord submit` renders the job on the embedded farm (an in-process coordinator + 2 local workers over
#      ZeroMQ on 127.0.0.1, journal in demo/out/.dp-state) and writes demo/out/frame_<n>.png, manifest.json
#      and demo/out/demo.mp4.
# The weights are random, not trained: the frames show the pipeline running, not a meaningful video.
# Extra arguments go to `dp-coord submit` (e.g. --workers 1 --steps 10 --json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DP_SETUP_SKIP_PIP="${DP_SETUP_SKIP_PIP:-1}" Scripts/setup.sh   # the demo needs no Python
swift build -c release --product dp-worker
swift build -c release --product dp-coord
BIN="$(swift build -c release --show-bin-path)"

OUT="${DP_DEMO_DIR:-$ROOT/demo}"
"$BIN/dp-worker" demo-assets --out "$OUT/assets" --frames 8
rm -rf "$OUT/out"
"$BIN/dp-coord" submit --model "$OUT/assets/model" --subject "$OUT/assets/subject.png" \
    --poses "$OUT/assets/poses" --out "$OUT/out" --video "$OUT/out/demo.mp4" --workers 2 "$@"
echo "demo: frames, manifest.json and demo.mp4 in $OUT/out" >&2
