#!/usr/bin/env bash
# Runs every test of dp-farm on a fresh machine: set-up (Scripts/setup.sh), the Swift build and tests,
# the Python tests of the checkpoint converter, a short chaos run of the farm, then the deployment tests (Scripts/tests/deploy_test.sh,
# Scripts/tests/slurm_test.sh). Extra arguments go to `swift test` (e.g. --filter X).
#
# The Swift tests build in the debug configuration: see DP_TEST_CONFIG below for why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# debug (default) or release. Debug, because the build dominates and the tests do not need speed: the
# engine's hot loops are OpenBLAS and the C kernels (CDPKernels, always -O2) and the golden models are tiny.
# Measured on the 2-core machine (busy with other builds) with 215 tests: debug build from a fresh clone
# ~7 min, tests 57 s; release build (-Ounchecked on DPTensor, -wmo, plus -enable-testing, which the @testable tests need)
# ~9+ min, tests 38 s. The whole CI run (.ci/run) took ~8 min in debug.
CONFIG="${DP_TEST_CONFIG:-debug}"
flags=(-c "$CONFIG")
[[ "$CONFIG" == release ]] && flags+=(-Xswiftc -enable-testing)

started=$SECONDS
phase() {
  local name="$1"; shift
  local t0=$SECONDS
  echo "==> $name" >&2
  "$@"
  echo "==> $name: $((SECONDS - t0)) s" >&2
}

phase "setup" Scripts/setup.sh
# The committed farm.pb.swift must be what protoc + the pinned protoc-gen-swift make of Protos/ (the first run
# builds the plugin into .build-protogen, ~2 minutes; later runs reuse it). ProtocolTests repeats the check.
phase "generated protobuf code is current" Scripts/gen_protos.sh --check
phase "swift build ($CONFIG, with tests)" swift build "${flags[@]}" --build-tests
# The tests include DPFuzzTests: every committed fuzz input (Tests/Fuzz/corpus, Tests/Fuzz/crashes) replayed
# once through the fuzz entry points. Fuzzing itself (Scripts/fuzz.sh) is not a phase here: its instrumented
# build alone takes several minutes, past this script's budget for it.
phase "swift test ($CONFIG)" swift test "${flags[@]}" --skip-build "$@"
phase "python tests (converter)" python3 -m pytest Scripts/tests -q
# The deployment files, with the binaries just built: systemd units (systemd-analyze verify) and Kubernetes
# manifests (schema + probes against the binaries), then Slurm on a throwaway one-node cluster (needs root;
# skipped with the reason otherwise, except under CI=true). A few minutes together; see each script's header.
BIN_DIR="$(swift build "${flags[@]}" --show-bin-path)"
# A short chaos run through the real binaries (Scripts/chaos.sh runs the full one: 200 frames, 10 worker
# SIGKILLs, 2 coordinator SIGKILLs, a 30 s network cut): a keyed farm of 4 workers renders 48 frames through 4
# worker SIGKILLs, 1 coordinator SIGKILL + restart and an 8 s cut, and every frame must be there once and
# byte-identical to a fault-free `dp-worker render`. ~2 minutes on the busy 2-core machine.
phase "chaos run (short)" python3 Scripts/chaos/chaos.py --bin "$BIN_DIR" --frames 48 --kills 4 --coord-kills 1 \
  --stall 8 --steps 10
phase "deployment checks (systemd, Kubernetes)" env DP_BIN_DIR="$BIN_DIR" Scripts/tests/deploy_test.sh
phase "Slurm tests (one-node cluster)" env DP_BIN_DIR="$BIN_DIR" Scripts/tests/slurm_test.sh
echo "==> all tests passed in $((SECONDS - started)) s" >&2
