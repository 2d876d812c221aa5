#!/usr/bin/env bash
# The chaos run of the farm (issue 12): a 200-frame job of the tiny demo model on loopback with 4 workers,
# 10 worker SIGKILLs at random moments, 2 coordinator SIGKILL + restarts, and one worker cut off for 30 s by a
# stalling TCP proxy; then frames lost, frames written twice, and byte-identity with a fault-free render
# (target: 0, 0, yes). Builds the release binaries first unless DP_BIN_DIR is given. Options go to
# Scripts/chaos/chaos.py (--frames, --workers, --kills, --coord-kills, --stall, --seed, --json-out, ...).
# Takes ~5-10 minutes on 2 cores. Figures of record: SECURITY.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${DP_BIN_DIR:-}" ]]; then
  swift build -c release --product dp-coord >&2
  swift build -c release --product dp-worker >&2
  DP_BIN_DIR="$(swift build -c release --show-bin-path)"
fi
exec python3 Scripts/chaos/chaos.py --bin "$DP_BIN_DIR" "$@"
