#!/usr/bin/env bash
# The Slurm deployment, tested on a real one-node Slurm cluster (Scripts/slurm-test-cluster.sh: munged,
# slurmctld and slurmd on 127.0.0.1) with the built binaries (.build/debug, or DP_BIN_DIR):
#
#  1. Array mode: Deploy/slurm/render-array.sbatch renders a job of the tiny golden model (pipeline-a1, its
#     poses repeated to FRAMES frames) as an array; one task is cancelled mid-run (after its first frame),
#     `dp-coord finalize` then fails naming that task's missing frames, the task is re-submitted alone, and
#     Deploy/slurm/finalize.sbatch runs as a dependent job (--dependency=afterok) writing manifest.json and
#     the video. Every frame must be byte-identical to a single-process `dp-worker render`. Then the README's
#     plain form: a seeded array with finalize depending on the whole array (afterok:<array job>).
#  2. Farm mode: a coordinator started outside Slurm, Deploy/slurm/workers.sbatch as a 2-task array of
#     `dp-worker --connect`; one worker task is scancel'ed while it renders a frame (it must hand the frame
#     back in its Goodbye and exit before Slurm's SIGKILL), and the job still completes byte-identical.
#
# Prints one line per check and 'N passed, N failed' at the end. Skips visibly (exit 0) when not root or
# when Slurm cannot be installed or started, except under CI=true, where both are failures.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="${DP_BIN_DIR:-$ROOT/.build/debug}"
GOLDEN="${DP_GOLDEN_DIR:-$ROOT/../shared/golden}/pipeline-a1"
FRAMES="${DP_SLURM_TEST_FRAMES:-8}"     # array job: FRAMES frames, 2 per task
STEPS="${DP_SLURM_TEST_STEPS:-40}"      # enough denoising steps that a frame lasts long enough to cancel mid-way
WAIT_S="${DP_SLURM_TEST_WAIT_S:-900}"   # per wait; generous: the machine may be busy or paused

passed=0 failed=0
ok() { echo "  ok    $*"; passed=$((passed + 1)); }
bad() { echo "  FAIL  $*"; failed=$((failed + 1)); }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
summary() { echo "slurm: $passed passed, $failed failed"; }
skip_all() {
  if [[ "${CI:-}" == true ]]; then
    echo "slurm tests: cannot run under CI: $1"
    echo "slurm: 0 passed, 1 failed"
    exit 1
  fi
  echo "slurm tests: SKIPPED: $1"
  echo "slurm: 0 passed, 0 failed, 2 skipped"
  exit 0
}

[[ $EUID -eq 0 ]] || skip_all "not root (the test cluster's daemons run as root; CI runs as root)"
for b in dp-worker dp-coord; do
  [[ -x "$BIN/$b" ]] || { echo "slurm tests: $BIN/$b not built (run swift build first)"; echo "slurm: 0 passed, 1 failed"; exit 1; }
done
[[ -d "$GOLDEN/model" ]] || { echo "slurm tests: no golden case at $GOLDEN"; echo "slurm: 0 passed, 1 failed"; exit 1; }

CLUSTER_DIR="$(mktemp -d /tmp/dp-slurm-cluster.XXXXXX)"
export DP_SLURM_DIR="$CLUSTER_DIR"
export DP_SLURM_PORT="${DP_SLURM_PORT:-$((20000 + RANDOM % 20000))}"
if ! cluster_out="$(Scripts/slurm-test-cluster.sh start)"; then
  rm -rf "$CLUSTER_DIR"
  skip_all "Scripts/slurm-test-cluster.sh start failed (see its messages above)"
fi
eval "$cluster_out"   # export SLURM_CONF=...
W="$(mktemp -d /tmp/dp-slurm-work.XXXXXX)"
coord_pid=""
cleanup() {
  local jobs
  jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
  [[ -n "${jobs// }" ]] && scancel $jobs 2>/dev/null
  [[ -n "$coord_pid" ]] && kill -TERM "$coord_pid" 2>/dev/null && wait "$coord_pid" 2>/dev/null
  Scripts/slurm-test-cluster.sh stop
  if (( failed )); then echo "slurm tests: work folder kept for inspection: $W (cluster logs: $CLUSTER_DIR)"
  else rm -rf "$W" "$CLUSTER_DIR"; fi
}
trap cleanup EXIT

# JobState of a job or array task (e.g. 12_3), from slurmctld (kept MinJobAge=300 s after it ended).
job_state() { scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1 | cut -d= -f2; }
# Waits until job $1 is in one of the states $2 (|-separated); prints the state reached.
wait_state() {
  local job="$1" want="$2" t0=$SECONDS s=""
  while (( SECONDS - t0 < WAIT_S )); do
    s="$(job_state "$job")"
    [[ -n "$s" && "|$want|" == *"|$s|"* ]] && { echo "$s"; return 0; }
    sleep 0.5
  done
  echo "timeout (last state ${s:-unknown})"; return 1
}
reaches() { wait_state "$@" >/dev/null; }  # for check: true once job $1 is in one of the states $2
# The farm binaries run with --log-format json (DP_LOG_FORMAT=json for the sbatch workers): the checks read their
# typed events, never the wording of their log lines. events FILE NAME: the metadata (JSON) of every record of
# event NAME in FILE, one per line.
events() {
  python3 - "$1" "$2" <<'PYEOF'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    if not line.startswith("{"):
        continue
    try:
        record = json.loads(line)
    except ValueError:
        continue
    if record.get("event") == sys.argv[2]:
        print(json.dumps(record.get("metadata", {})))
PYEOF
}
same_frames() {  # same_frames DIR_A DIR_B N: frame_00000.png .. frame_<N-1> byte-identical
  local a="$1" b="$2" n="$3" i f
  for ((i = 0; i < n; i++)); do
    f="$(printf 'frame_%05d.png' "$i")"
    cmp -s "$a/$f" "$b/$f" || { echo "    $a/$f differs from $b/$f (or is missing)"; return 1; }
  done
}

# Inputs: the golden model, subject and noise; its 4 poses repeated into a FRAMES-frame sequence.
mkdir -p "$W/poses"
npose=$(ls "$GOLDEN/inputs/poses" | grep -c '^frame_[0-9]*_densepose.npy$')
for ((i = 0; i < FRAMES; i++)); do
  cp "$GOLDEN/inputs/poses/frame_$((i % npose))_densepose.npy" "$W/poses/frame_${i}_densepose.npy"
done
common=(--model "$GOLDEN/model" --subject "$GOLDEN/inputs/subject.png" --poses "$W/poses"
        --noise "$GOLDEN/inputs/noise.f32" --steps "$STEPS")
echo "slurm tests: reference render ($FRAMES frames, $STEPS steps, one process)"
t0=$SECONDS
if ! "$BIN/dp-worker" render "${common[@]}" --out "$W/ref" --threads 1 2> "$W/ref.log"; then
  cat "$W/ref.log"; bad "reference render (dp-worker render)"; exit 1
fi
echo "slurm tests: reference took $((SECONDS - t0)) s"

# ---------------------------------------------------------------------------------------------------------
echo "slurm tests: 1. array mode (render-array.sbatch, a cancelled task, finalize.sbatch)"
PER_TASK=2
ntasks=$(( (FRAMES + PER_TASK - 1) / PER_TASK ))
victim=$(( ntasks / 2 ))            # the task cancelled mid-run
vfirst=$(( victim * PER_TASK ))
OUT="$W/array-out"
renv="ALL,MODEL=$GOLDEN/model,SUBJECT=$GOLDEN/inputs/subject.png,POSES=$W/poses,OUT=$OUT,FRAMES=$FRAMES"
renv+=",PER_TASK=$PER_TASK,NOISE=$GOLDEN/inputs/noise.f32,STEPS=$STEPS,DP_WORKER=$BIN/dp-worker"
# The script's #SBATCH lines ask for 16 CPUs and 16G; the test node is smaller, so the test asks for less.
small=(--cpus-per-task=1 --mem=512M --chdir="$W")
j1=$(sbatch --parsable "${small[@]}" --array="0-$((ntasks - 1))" --output="$W/array-%A_%a.log" \
     --export="$renv" Deploy/slurm/render-array.sbatch) || { bad "sbatch render-array.sbatch"; exit 1; }
echo "  array job $j1: $ntasks tasks; task $victim (frames $vfirst-$((vfirst + PER_TASK - 1))) will be cancelled"
# Cancel the victim once it has written its first frame and is rendering its second.
t0=$SECONDS
while (( SECONDS - t0 < WAIT_S )) && [[ ! -e "$OUT/$(printf 'frame_%05d.png' "$vfirst")" ]]; do sleep 0.2; done
scancel "${j1}_$victim"
echo "  cancelled ${j1}_$victim after its first frame"
check "the cancelled task ends CANCELLED" reaches "${j1}_$victim" "CANCELLED"
check "the cancelled task did not write its last frame" \
  test ! -e "$OUT/$(printf 'frame_%05d.png' $((vfirst + PER_TASK - 1)))"
for ((t = 0; t < ntasks; t++)); do
  (( t == victim )) && continue
  s="$(wait_state "${j1}_$t" "COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY")"
  if [[ "$s" == COMPLETED ]]; then ok "array task ${j1}_$t COMPLETED"
  else bad "array task ${j1}_$t ended $s, expected COMPLETED"; sed 's/^/    | /' "$W/array-${j1}_$t.log"; fi
done
# finalize with a task's frames missing: fails, names them, writes nothing.
"$BIN/dp-coord" finalize --out "$OUT" --video "$W/array.mp4" > "$W/finalize-early.out" 2> "$W/finalize-early.err"
rc=$?
check "finalize with missing frames exits non-zero" test "$rc" -ne 0
check "finalize names the missing frame $((vfirst + PER_TASK - 1))" \
  grep -q "frame $((vfirst + PER_TASK - 1)): frame_$(printf '%05d' $((vfirst + PER_TASK - 1))).png is missing" "$W/finalize-early.err"
check "finalize with missing frames writes no manifest or video" test ! -e "$OUT/manifest.json" -a ! -e "$W/array.mp4"
sed 's/^/    | /' "$W/finalize-early.err" | head -n 4

# Re-submit the cancelled task alone, and finalize as a job depending on every successful part.
j2=$(sbatch --parsable "${small[@]}" --array="$victim" --output="$W/array-%A_%a.log" \
     --export="$renv" Deploy/slurm/render-array.sbatch) || { bad "sbatch --array=$victim (re-submission)"; exit 1; }
deps="afterok"
for ((t = 0; t < ntasks; t++)); do (( t == victim )) || deps+=":${j1}_$t"; done
deps+=":$j2"
j3=$(sbatch --parsable --dependency="$deps" "${small[@]}" --output="$W/finalize-%j.log" \
     --export="ALL,OUT=$OUT,VIDEO=$W/array.mp4,DP_COORD=$BIN/dp-coord" Deploy/slurm/finalize.sbatch) \
  || { bad "sbatch finalize.sbatch"; exit 1; }
echo "  re-submitted task $victim as job $j2; finalize job $j3 (--dependency=$deps)"
check "re-submitted task COMPLETED" test "$(wait_state "${j2}_$victim" "COMPLETED|FAILED|CANCELLED|TIMEOUT")" == COMPLETED
check "finalize job COMPLETED" test "$(wait_state "$j3" "COMPLETED|FAILED|CANCELLED|TIMEOUT")" == COMPLETED
sed 's/^/    | /' "$W/finalize-$j3.log"
check "array frames byte-identical to the single-process render" same_frames "$OUT" "$W/ref" "$FRAMES"
manifest_ok() {
  python3 - "$OUT/manifest.json" "$FRAMES" "$W/array.mp4" "$j2" "$victim" <<'EOF'
import json, sys, hashlib
m = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
assert m["complete"] is True, "complete is not true"
assert m["frames_expected"] == list(range(n)), m["frames_expected"]
assert [f["frame"] for f in m["frames"]] == list(range(n)), "frames listed: %s" % [f["frame"] for f in m["frames"]]
assert m["video"]["frames"] == n and m["video"]["path"] == sys.argv[3], m["video"]
assert m["video"]["sha256"] == hashlib.sha256(open(sys.argv[3], "rb").read()).hexdigest(), "video sha256"
redo = [f["frame"] for f in m["frames"] if f["worker"].endswith("slurm-%s_%s" % (sys.argv[4], sys.argv[5]))]
assert redo, "no frame credited to the re-submitted task slurm-%s_%s" % (sys.argv[4], sys.argv[5])
EOF
}
check "manifest.json complete, every frame listed, video recorded (frames of the re-run credited to it)" manifest_ok
check "the video has $FRAMES frames (ffprobe)" test "$(ffprobe -v error -count_frames -select_streams v:0 \
  -show_entries stream=nb_read_frames -of csv=p=0 "$W/array.mp4" 2>/dev/null)" == "$FRAMES"

# The README's plain form: a seeded job, finalize depending on the whole array (afterok:<array job>).
echo "slurm tests: 1b. array mode as the README shows it (SEED, --dependency=afterok:<array job>)"
quick=(--model "$GOLDEN/model" --subject "$GOLDEN/inputs/subject.png" --poses "$GOLDEN/inputs/poses" --seed 7 --steps 5)
"$BIN/dp-worker" render "${quick[@]}" --out "$W/ref-seed" --threads 1 2> "$W/ref-seed.log" || bad "seeded reference render"
OUT2="$W/array-seed"
ja=$(sbatch --parsable "${small[@]}" --array="0-$(( (npose + 1) / 2 - 1 ))" --output="$W/seed-%A_%a.log" \
     --export="ALL,MODEL=$GOLDEN/model,SUBJECT=$GOLDEN/inputs/subject.png,POSES=$GOLDEN/inputs/poses,OUT=$OUT2,FRAMES=$npose,PER_TASK=2,SEED=7,STEPS=5,DP_WORKER=$BIN/dp-worker" \
     Deploy/slurm/render-array.sbatch) || bad "sbatch render-array.sbatch (seeded)"
jf=$(sbatch --parsable --dependency="afterok:$ja" "${small[@]}" --output="$W/finalize-seed-%j.log" \
     --export="ALL,OUT=$OUT2,VIDEO=$W/seed.mp4,DP_COORD=$BIN/dp-coord" Deploy/slurm/finalize.sbatch) || bad "sbatch finalize.sbatch (seeded)"
check "seeded array + finalize (afterok:$ja) COMPLETED" test "$(wait_state "$jf" "COMPLETED|FAILED|CANCELLED|TIMEOUT")" == COMPLETED
check "seeded array frames byte-identical to dp-worker render --seed 7" same_frames "$OUT2" "$W/ref-seed" "$npose"
check "seeded manifest.json complete with the seed and a video" python3 -c "
import json, os, sys
m = json.load(open('$OUT2/manifest.json'))
sys.exit(0 if m['complete'] and m['settings'].get('seed') == 7 and m['video']['frames'] == $npose and os.path.exists('$W/seed.mp4') else 1)"

# ---------------------------------------------------------------------------------------------------------
echo "slurm tests: 2. farm mode (dp-coord serve outside Slurm, workers.sbatch, a worker cancelled mid-frame)"
# Keys as in Deploy/slurm/README.md: the coordinator's pair, one worker key shared by the array, a client key.
mkdir -p "$W/keys" "$W/workers.d" "$W/clients.d"
"$BIN/dp-coord" keygen "$W/keys/coordinator" > /dev/null || { bad "dp-coord keygen"; exit 1; }
"$BIN/dp-worker" keygen "$W/keys/worker" > /dev/null || { bad "dp-worker keygen"; exit 1; }
"$BIN/dp-coord" keygen "$W/keys/client" > /dev/null || { bad "dp-coord keygen (client)"; exit 1; }
cp "$W/keys/worker.pub" "$W/workers.d/" && cp "$W/keys/client.pub" "$W/clients.d/"
export DP_CLIENT_KEY="$W/keys/client.key" DP_SERVER_KEY="$W/keys/coordinator.pub"
# Outputs go inside the coordinator's --output-root; a served job names its folder relative to it.
"$BIN/dp-coord" serve --bind "tcp://127.0.0.1:*" --state "$W/coord-state" --key "$W/keys/coordinator.key" \
  --authorized-workers "$W/workers.d" --authorized-clients "$W/clients.d" --output-root "$W/outputs" \
  --log-format json 2> "$W/coord.log" &
coord_pid=$!
ep=""
t0=$SECONDS
while (( SECONDS - t0 < 120 )) && [[ -z "$ep" ]]; do
  ep="$(events "$W/coord.log" serving | head -n 1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("endpoint", ""))')"
  sleep 0.2
done
[[ -n "$ep" ]] || { bad "coordinator did not start"; cat "$W/coord.log"; exit 1; }
echo "  coordinator $ep (pid $coord_pid)"
jw=$(sbatch --parsable "${small[@]}" --array=0-1 --output="$W/worker-%A_%a.log" \
     --export="ALL,DP_LOG_FORMAT=json,DP_COORDINATOR=$ep,DP_WORKER=$BIN/dp-worker,DP_NAME_PREFIX=slurm,DP_WORKER_KEY=$W/keys/worker.key,DP_SERVER_KEY=$W/keys/coordinator.pub" \
     Deploy/slurm/workers.sbatch) \
  || { bad "sbatch workers.sbatch"; exit 1; }
echo "  worker array job $jw (2 tasks)"
"$BIN/dp-coord" submit --coordinator "$ep" "${common[@]}" --out farm-out --json > "$W/submit.jsonl" 2> "$W/submit.err" &
submit_pid=$!
# The victim: the first worker seen rendering its second (or later) frame.
victim_name=""
t0=$SECONDS
while (( SECONDS - t0 < WAIT_S )) && [[ -z "$victim_name" ]]; do
  kill -0 "$submit_pid" 2>/dev/null || { bad "dp-coord submit ended before a worker became busy"; cat "$W/submit.err"; exit 1; }
  victim_name="$("$BIN/dp-coord" workers --coordinator "$ep" --json 2>/dev/null | python3 -c '
import json, sys
# busy after a first frame: its model is loaded, so the frame it holds is being rendered (not fetched).
busy = [w["name"] for w in json.load(sys.stdin) if w["connected"] and w["busy"] > 0 and w["framesDone"] >= 1]
print(sorted(busy)[0] if busy else "")' 2>/dev/null)"
  [[ -z "$victim_name" ]] && sleep 0.2
done
[[ -n "$victim_name" ]] || { bad "no worker became busy"; cat "$W/coord.log"; exit 1; }
vtask="${victim_name##*-}"
scancel "${jw}_$vtask"
echo "  cancelled ${jw}_$vtask ($victim_name) while it rendered a frame"
check "the cancelled worker task ends CANCELLED" reaches "${jw}_$vtask" "CANCELLED"
vlog="$W/worker-${jw}_$vtask.log"
# The attempts its Goodbye handed back (event handedBack, attempts "12" or "12,13").
handed="$(events "$vlog" handedBack | python3 -c 'import json, sys; print(",".join(json.loads(l)["attempts"] for l in sys.stdin if json.loads(l)["attempts"]))')"
check "the cancelled worker got SIGTERM and handed back its frame (Goodbye with an attempt)" test -n "$handed"
check "the cancelled worker exited by itself (not SIGKILLed)" test -n "$(events "$vlog" workerStopped)"
sed -n '/SIGTERM/,$p' "$vlog" | sed 's/^/    | /'
t0=$SECONDS
while (( SECONDS - t0 < WAIT_S )) && kill -0 "$submit_pid" 2>/dev/null; do sleep 0.5; done
wait "$submit_pid"
rc=$?
check "the job completes on the remaining worker (dp-coord submit exit 0)" test "$rc" -eq 0
(( rc == 0 )) || { tail -n 5 "$W/submit.err" "$W/submit.jsonl"; }
requeued_handed() {  # an attemptRequeued event of the coordinator names one of the attempts in $handed
  events "$W/coord.log" attemptRequeued | python3 -c '
import json, sys
handed = set(sys.argv[1].split(","))
sys.exit(0 if any(json.loads(l)["attempt"] in handed for l in sys.stdin) else 1)' "$handed"
}
check "the coordinator requeued the handed-back frame" requeued_handed
check "farm frames byte-identical to the single-process render" same_frames "$W/outputs/farm-out" "$W/ref" "$FRAMES"
check "farm manifest.json complete" python3 -c "import json,sys; m=json.load(open('$W/outputs/farm-out/manifest.json')); sys.exit(0 if m['complete'] and len(m['frames'])==$FRAMES else 1)"
scancel "$jw"

summary
(( failed == 0 ))
