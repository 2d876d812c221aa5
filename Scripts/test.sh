#!/usr/bin/env bash
# Runs every test of dp-farm on a fresh machine: set-up (Scripts/setup.sh), the Swift build and tests,
# then the Python tests of the checkpoint converter. Extra arguments go to `swift test` (e.g. --filter X).
#
# The Swift tests build in the debug configuration: see DP_TEST_CONFIG below for why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# debug (default) or release. Measured on the 2-core CI machine (see README "Tests"): CONFIG_NOTE
CONFIG="${DP_TEST_CONFIG:-debug}"

started=$SECONDS
phase() {
  local name="$1"; shift
  local t0=$SECONDS
  echo "==> $name" >&2
  "$@"
  echo "==> $name: $((SECONDS - t0)) s" >&2
}

phase "setup" Scripts/setup.sh
phase "swift build ($CONFIG, with tests)" swift build -c "$CONFIG" --build-tests
phase "swift test ($CONFIG)" swift test -c "$CONFIG" --skip-build "$@"
phase "python tests (converter)" python3 -m pytest Scripts/tests -q
echo "==> all tests passed in $((SECONDS - started)) s" >&2
