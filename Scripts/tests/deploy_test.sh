#!/usr/bin/env bash
# Offline checks of Deploy/systemd and Deploy/kubernetes (no systemd or Kubernetes cluster is started):
#
#  systemd     `systemd-analyze verify` of both units in a scratch root holding the built binaries at the
#              units' ExecStart paths, the example environment files and a copy of this machine's system
#              units; any message (unknown key, bad value, missing binary) is a failure, not only the exit
#              status. `systemd-analyze security --offline` must rate both at most 3.5 ("OK"), and
#              `systemd-sysusers --dry-run` must accept dp-farm.sysusers.conf (nothing is created).
#  Kubernetes  `kubernetes-validate --strict` (PyPI; the OpenAPI schemas of each Kubernetes release, bundled,
#              offline) against the oldest and newest release it knows, then Scripts/tests/k8s_check.py
#              (cross-references, and the manifests' args and probes run against the built binaries).
#
# Prints one line per check and 'N passed, N failed'. A missing tool is installed (apt-get / pip) when
# possible; if it cannot be, its checks are skipped with the reason, except under CI=true, where that fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="${DP_BIN_DIR:-$ROOT/.build/debug}"
KV_VERSION="1.37.0"   # kubernetes-validate, pinned: its bundled schemas are what the check compares with
K8S_VERSIONS=(1.25.0 1.37.0)

passed=0 failed=0 skipped=0
ok() { echo "  ok    $*"; passed=$((passed + 1)); }
bad() { echo "  FAIL  $*"; failed=$((failed + 1)); }
skip() {
  if [[ "${CI:-}" == true ]]; then bad "$* (cannot be skipped under CI)"; return; fi
  echo "  SKIP  $*"; skipped=$((skipped + 1))
}
W="$(mktemp -d /tmp/dp-deploy-test.XXXXXX)"
trap 'rm -rf "$W"' EXIT

for b in dp-coord dp-worker; do
  [[ -x "$BIN/$b" ]] || { echo "deploy tests: $BIN/$b not built (run swift build first)"; echo "deploy: 0 passed, 1 failed"; exit 1; }
done

# ---------------------------------------------------------------------------------------------------------
echo "deploy tests: systemd units (Deploy/systemd)"
if ! command -v systemd-analyze >/dev/null && [[ $EUID -eq 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null 2>&1; }
fi
if ! command -v systemd-analyze >/dev/null; then
  skip "systemd-analyze not installed (apt-get install systemd)"
else
  R="$W/root"
  mkdir -p "$R/usr/local/bin" "$R/etc/dp-farm" "$R/etc/systemd/system" "$R/usr/lib/systemd"
  # The machine's own system units (sysinit.target, network-online.target ...) the units refer to.
  cp -a "$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /usr/lib/systemd/system)" "$R/usr/lib/systemd/system"
  cp "$BIN/dp-coord" "$BIN/dp-worker" "$R/usr/local/bin/"
  # dp-coord.service's ExecReload (SIGHUP: re-read the authorized keys) runs /bin/kill.
  mkdir -p "$R/bin" && cp /bin/kill "$R/bin/kill"
  cp Deploy/systemd/coord.env Deploy/systemd/worker.env "$R/etc/dp-farm/"
  cp Deploy/systemd/dp-coord.service Deploy/systemd/dp-worker.service "$R/etc/systemd/system/"
  for unit in dp-coord.service dp-worker.service; do
    out="$(systemd-analyze verify --root="$R" "$unit" 2>&1)"; rc=$?
    if [[ $rc -eq 0 && -z "$out" ]]; then ok "systemd-analyze verify $unit (no messages)"
    else bad "systemd-analyze verify $unit: exit $rc"; echo "$out" | sed 's/^/    | /'; fi
    out="$(systemd-analyze security --offline=true --threshold=35 --root="$R" "$unit" 2>&1)"; rc=$?
    level="$(echo "$out" | grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' | sed 's/.*: //')"
    if [[ $rc -eq 0 ]]; then ok "systemd-analyze security $unit: exposure $level (at most 3.5)"
    else bad "systemd-analyze security $unit: exposure ${level:-?} above 3.5 (exit $rc)"; echo "$out" | grep '✗' | sed 's/^/    | /'; fi
    for key in NoNewPrivileges=yes PrivateTmp=yes ProtectSystem=strict 'CapabilityBoundingSet=$' 'User=dpfarm$'; do
      if grep -q "^$key" "Deploy/systemd/$unit"; then ok "$unit sets ${key%$}"
      else bad "$unit lacks ${key%$}"; fi
    done
  done
  grep -q '^StateDirectory=dp-farm' Deploy/systemd/dp-coord.service && ok "dp-coord.service has StateDirectory=" \
    || bad "dp-coord.service lacks StateDirectory="
  grep -q '^CacheDirectory=dp-farm' Deploy/systemd/dp-worker.service && ok "dp-worker.service has CacheDirectory=" \
    || bad "dp-worker.service lacks CacheDirectory="
  if command -v systemd-sysusers >/dev/null; then
    # In the scratch root (with this machine's users), as installed: /etc/sysusers.d/dp-farm.conf.
    mkdir -p "$R/etc/sysusers.d" && cp /etc/passwd /etc/group "$R/etc/" 2>/dev/null
    cp Deploy/systemd/dp-farm.sysusers.conf "$R/etc/sysusers.d/dp-farm.conf"
    out="$(systemd-sysusers --root="$R" --dry-run "$R/etc/sysusers.d/dp-farm.conf" 2>&1)"; rc=$?
    if [[ $rc -eq 0 ]] && echo "$out" | grep -q "user 'dpfarm'"; then ok "systemd-sysusers --dry-run dp-farm.sysusers.conf creates user dpfarm"
    else bad "systemd-sysusers --dry-run dp-farm.sysusers.conf: exit $rc"; echo "$out" | sed 's/^/    | /'; fi
  else
    skip "systemd-sysusers not installed"
  fi
fi

# ---------------------------------------------------------------------------------------------------------
echo "deploy tests: Kubernetes manifests (Deploy/kubernetes)"
if ! python3 -c "import kubernetes_validate" 2>/dev/null; then
  python3 -m pip install -q "kubernetes-validate==$KV_VERSION" >/dev/null 2>&1
fi
if ! python3 -c "import kubernetes_validate" 2>/dev/null; then
  skip "kubernetes-validate not installed (python3 -m pip install kubernetes-validate==$KV_VERSION)"
else
  for v in "${K8S_VERSIONS[@]}"; do
    out="$(python3 -m kubernetes_validate --strict -k "$v" Deploy/kubernetes/*.yaml 2>&1)"; rc=$?
    n="$(echo "$out" | grep -c ' passed for resource ')"
    if [[ $rc -eq 0 && "$n" -ge 5 ]]; then ok "kubernetes-validate --strict -k $v: $n resources match the schema"
    else bad "kubernetes-validate --strict -k $v: exit $rc, $n resources passed"; echo "$out" | sed 's/^/    | /'; fi
  done
fi
if python3 -c "import yaml" 2>/dev/null; then
  out="$(python3 Scripts/tests/k8s_check.py 2>&1)"; rc=$?
  echo "$out" | grep -v '^k8s-check: [0-9]* passed' | sed 's/^/  /'
  p="$(echo "$out" | sed -n 's/^k8s-check: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')"
  f="$(echo "$out" | sed -n 's/^k8s-check: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  [[ $rc -ne 0 && "${f:-0}" -eq 0 ]] && bad "Scripts/tests/k8s_check.py exited $rc"
else
  skip "PyYAML not installed (comes with kubernetes-validate)"
fi

echo "deploy: $passed passed, $failed failed, $skipped skipped"
(( failed == 0 ))
