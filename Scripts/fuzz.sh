#!/usr/bin/env bash
# Fuzzes every input parser of dp-farm with libFuzzer (Tests/Fuzz/README.md; results go in SECURITY.md).
#
#   Scripts/fuzz.sh [SECONDS] [TARGET...]   build the libFuzzer binary, fuzz each target SECONDS (default 60)
#   Scripts/fuzz.sh --replay                run every committed corpus and crash input once, no fuzzer
#                                           (the same check the test suite makes: DPFuzzTests)
#
# The libFuzzer binary is dp-fuzz built in its own build folder (.build-fuzz, release configuration, so the
# numeric kernels keep -Ounchecked as in production) with `-sanitize=fuzzer,address -DDP_LIBFUZZER`: every
# Swift module is coverage-instrumented and checked by AddressSanitizer; one binary serves all targets
# (DP_FUZZ_TARGET picks one). Its link needs lld and --allow-multiple-definition: libFuzzer's archive brings
# its own `main`, which gold refuses next to dp-fuzz's (dp-fuzz's wins and calls LLVMFuzzerRunDriver).
# New corpus entries go to .build-fuzz/corpus/<target> (not committed); a crash, out-of-memory (a single
# allocation over -malloc_limit_mb, 2 GB) or timeout input is written to Tests/Fuzz/crashes/<target>/
# and counted. Environment: DP_FUZZ_CONFIG=debug for a quicker build, DP_FUZZ_JOBS for the build's -j.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ="$ROOT/Tests/Fuzz"

if [[ "${1:-}" == "--replay" ]]; then
  swift build -c debug --product dp-fuzz >&2
  bin="$(swift build -c debug --show-bin-path)/dp-fuzz"
  status=0
  for target in $("$bin" --list | cut -f1); do
    dirs=("$FUZZ/corpus/$target")
    [[ -d "$FUZZ/crashes/$target" ]] && dirs+=("$FUZZ/crashes/$target")
    "$bin" replay "$target" "${dirs[@]}" | tail -n 1 || status=1
  done
  exit $status
fi

SECONDS_PER_TARGET="${1:-60}"
[[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...] | --replay" >&2; exit 2; }
shift || true
CONFIG="${DP_FUZZ_CONFIG:-release}"
build=(swift build -c "$CONFIG" --scratch-path "$ROOT/.build-fuzz" --product dp-fuzz
       -Xswiftc -sanitize=fuzzer,address -Xswiftc -DDP_LIBFUZZER
       -Xswiftc -use-ld=lld -Xlinker --allow-multiple-definition)
[[ -n "${DP_FUZZ_JOBS:-}" ]] && build+=(-j "$DP_FUZZ_JOBS")
echo "==> building dp-fuzz ($CONFIG, -sanitize=fuzzer,address)" >&2
"${build[@]}" 2>&1 | grep -v "Cannot export local symbol" >&2
bin="$("${build[@]}" --show-bin-path 2>/dev/null)/dp-fuzz"

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <("$bin" --list | cut -f1)

summary=()
total_crashes=0
for target in "${targets[@]}"; do
  scratch="$ROOT/.build-fuzz/corpus/$target"
  crashes="$FUZZ/crashes/$target"
  mkdir -p "$scratch" "$crashes"
  log="$ROOT/.build-fuzz/fuzz-$target.log"
  before=$(ls "$crashes" | wc -l)
  echo "==> fuzzing $target for ${SECONDS_PER_TARGET} s (log: $log)" >&2
  # detect_leaks=0: the Swift runtime's caches look like leaks to LeakSanitizer at exit.
  set +e
  # SWIFT_BACKTRACE=enable=no: libFuzzer reports a Swift trap itself (the Swift backtracer trips ASan).
  DP_FUZZ_TARGET="$target" ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=0" SWIFT_BACKTRACE=enable=no \
    "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
      -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$crashes/" "$scratch" "$FUZZ/corpus/$target" \
      >"$log" 2>&1
  rc=$?
  set -e
  rm -rf "${TMPDIR:-/tmp}"/dp-fuzz-coordinator-* "${TMPDIR:-/tmp}"/dp-fuzz-worker-*  # the service targets' folders
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)
  [[ -n "$runs" ]] || runs=$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  after=$(ls "$crashes" | wc -l)
  found=$((after - before))
  if [[ $rc -ne 0 && $found -eq 0 ]]; then
    echo "dp-fuzz $target exited $rc without writing a crash input; see $log" >&2
    tail -n 20 "$log" >&2
    found=1
  fi
  total_crashes=$((total_crashes + found))
  summary+=("$(printf '%-12s %12s executions  %d crashes  (corpus %d files)' "$target" "${runs:-?}" "$found" "$(ls "$scratch" | wc -l)")")
  if [[ $found -gt 0 ]]; then grep -E "ERROR|Fatal error|SUMMARY|==[0-9]+==" "$log" | head -n 5 >&2 || true; fi
done
echo "==> fuzz results (${SECONDS_PER_TARGET} s per target)"
printf '%s\n' "${summary[@]}"
[[ $total_crashes -eq 0 ]]
