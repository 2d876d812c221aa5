#!/usr/bin/env bash
# A throwaway one-node Slurm cluster on this machine, for the Slurm tests (Scripts/tests/slurm_test.sh):
#
#   Scripts/slurm-test-cluster.sh start   # prints `export SLURM_CONF=...`; the node is idle when it returns
#   Scripts/slurm-test-cluster.sh stop    # ends exactly the daemons `start` started (by their pid files)
#   Scripts/slurm-test-cluster.sh status  # sinfo of the test cluster
#
# Needs root (it runs munged, slurmctld and slurmd as root, and installs `slurm-wlm munge` with apt-get when
# they are missing). Everything it writes lives in $DP_SLURM_DIR (default /tmp/dp-slurm-test): slurm.conf
# (one node with this machine's real CPUs and memory, from `slurmd -C`), its own munge key and socket (a
# munged the machine already runs is left alone), the daemons' state, logs and pid files. Clients find the
# cluster through SLURM_CONF=$DP_SLURM_DIR/slurm.conf (`start` prints the export line). Ports: slurmctld
# $DP_SLURM_PORT (default 16817), slurmd the next one, both on 127.0.0.1.
set -euo pipefail

DIR="${DP_SLURM_DIR:-/tmp/dp-slurm-test}"
PORT="${DP_SLURM_PORT:-16817}"
CONF="$DIR/slurm.conf"
WAIT_S="${DP_SLURM_WAIT_S:-120}"   # generous: the machine may be busy (or paused) while the daemons start

say() { echo "slurm-test-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_slurm() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
      && command -v sbatch >/dev/null; then
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "slurm-wlm and munge are not installed and installing them needs root"
  say "installing slurm-wlm munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
}

write_conf() {
  # The node exactly as slurmd sees this machine (CPUs, sockets, cores, threads, memory): a node whose
  # slurm.conf promises more than it has is drained at registration.
  local node_line
  node_line="$(slurmd -C | head -n 1)"
  [[ "$node_line" == NodeName=* ]] || die "slurmd -C printed '$node_line', expected a NodeName= line"
  local node="${node_line%% *}"; node="${node#NodeName=}"
  cat > "$CONF.tmp" <<EOF
# Written by Scripts/slurm-test-cluster.sh: a one-node test cluster on 127.0.0.1 (all daemons run as root).
ClusterName=dptest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroup plugins: a container's cgroup tree is not Slurm's to manage; processes are tracked by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# scancel / time limit: SIGTERM, then SIGKILL after KillWait seconds (what a real cluster does).
KillWait=30
InactiveLimit=0
MinJobAge=300
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  sed -i -e 's/ UpTime=[^ ]*//' "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  echo "$node"
}

start() {
  [[ $EUID -eq 0 ]] || die "must run as root (the test cluster's daemons run as root)"
  install_slurm
  if pid_alive "$DIR/slurmctld.pid" || pid_alive "$DIR/slurmd.pid" || pid_alive "$DIR/munge/munged.pid"; then
    say "a test cluster is already running from $DIR; stopping it first"
    stop
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR/munge" "$DIR/ctld" "$DIR/slurmd"
  chmod 700 "$DIR" "$DIR/munge"
  local node
  node="$(write_conf)"
  export SLURM_CONF="$CONF"

  # munged with a key of its own (munged refuses a key readable by others).
  head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
  chmod 400 "$DIR/munge/munge.key"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start; see $DIR/munge/munged.log"
  # -i: ignore any saved state (there is none: the folder is new).
  slurmctld -f "$CONF" -i || die "slurmctld did not start; see $DIR/slurmctld.log"
  slurmd -f "$CONF" -N "$node" || die "slurmd did not start; see $DIR/slurmd.log"

  local t0=$SECONDS state=""
  while (( SECONDS - t0 < WAIT_S )); do
    state="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null || true)"
    [[ "$state" == idle ]] && break
    sleep 1
  done
  if [[ "$state" != idle ]]; then
    say "node $node is '${state:-not reported}' after ${WAIT_S} s, expected idle; last log lines:"
    tail -n 15 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    stop
    exit 1
  fi
  say "node $node idle after $((SECONDS - t0)) s ($(sinfo -h -N -n "$node" -o '%c CPUs, %m MB'))"
  echo "export SLURM_CONF=$CONF"
}

stop() {
  # Each daemon by the pid its own pid file holds, and only if that process is still the daemon we started.
  local name file pid
  for pair in "slurmd:$DIR/slurmd.pid" "slurmctld:$DIR/slurmctld.pid" "munged:$DIR/munge/munged.pid"; do
    name="${pair%%:*}"; file="${pair#*:}"
    [[ -s "$file" ]] || continue
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then say "$name ($pid) ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$pid"; fi
      say "stopped $name ($pid)"
    fi
    rm -f "$file"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF="$CONF" sinfo ;;
  *) echo "usage: $0 start|stop|status   (state in \$DP_SLURM_DIR, default /tmp/dp-slurm-test)" >&2; exit 2 ;;
esac
