#!/usr/bin/env python3
"""Checks Deploy/kubernetes beyond the schema (Scripts/tests/deploy_test.sh runs the schema check first).

1. Cross-references inside the manifests: selectors match pod labels, the Service reaches the StatefulSet's
   named port, the ConfigMap's DP_COORDINATOR names that Service, the PodDisruptionBudget selects the workers,
   --threads equals the worker's CPU request, the grace periods exceed the worker's hand-back bound.
2. The manifests' commands against the real binaries (DP_BIN_DIR, default .build/debug): the coordinator
   runs with the StatefulSet's args (port and paths replaced by free/temporary ones), a worker with the
   Deployment's args ($(VAR) expanded as Kubernetes does), and every exec probe runs as Kubernetes would
   run it (env from the pod spec), expecting: healthy -> 0; readiness of an unregistered worker -> failure
   while its liveness passes only if the coordinator is down (not the worker's fault).

Prints one line per check and 'N passed, N failed'; exits 1 if any failed.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "Deploy", "kubernetes")
BIN = os.environ.get("DP_BIN_DIR", os.path.join(ROOT, ".build", "debug"))
HAND_BACK_BOUND_S = 5  # the worker's stop bound: heartbeat 1000 ms x liveness 5 (coordinator defaults)

passed = failed = 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok    {what}")
    else:
        failed += 1
        print(f"  FAIL  {what}" + (f": {detail}" if detail else ""))


def load():
    docs = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            with open(os.path.join(K8S, name)) as f:
                for d in yaml.safe_load_all(f):
                    if d:
                        docs[(d["kind"], d["metadata"]["name"])] = d
    return docs


def expand(arg, env):
    """Kubernetes' $(VAR) expansion of container args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_probe(probe, env, timeout):
    cmd = probe["exec"]["command"]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def localize(container, local):
    """The container with /etc/dp-farm paths in its args and exec probes swapped for this machine's."""
    c = dict(container, args=[local(a) for a in container["args"]])
    for probe in ("readinessProbe", "livenessProbe"):
        if probe in c:
            c[probe] = {"exec": {"command": [local(a) for a in c[probe]["exec"]["command"]]}}
    return c


def main():
    docs = load()
    svc = docs[("Service", "dp-coord")]
    sts = docs[("StatefulSet", "dp-coord")]
    dep = docs[("Deployment", "dp-worker")]
    cm = docs[("ConfigMap", "dp-worker")]
    pdb = docs[("PodDisruptionBudget", "dp-worker")]
    print("k8s check: cross-references")
    sts_labels = sts["spec"]["template"]["metadata"]["labels"]
    dep_labels = dep["spec"]["template"]["metadata"]["labels"]
    subset = lambda sel, labels: all(labels.get(k) == v for k, v in sel.items())
    check("StatefulSet selector matches its pod labels", subset(sts["spec"]["selector"]["matchLabels"], sts_labels))
    check("StatefulSet has exactly 1 replica", sts["spec"]["replicas"] == 1)
    check("StatefulSet serviceName is the Service", sts["spec"]["serviceName"] == svc["metadata"]["name"])
    check("Service selects the coordinator pod", subset(svc["spec"]["selector"], sts_labels))
    coord = sts["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in coord["ports"]}
    target = svc["spec"]["ports"][0]["targetPort"]
    check("Service targetPort is a named port of the coordinator", target in ports, f"{target} not in {ports}")
    bind = coord["args"][coord["args"].index("--bind") + 1]
    check("coordinator binds the port it declares", bind.endswith(f":{ports.get(target)}"), bind)
    state_arg = coord["args"][coord["args"].index("--state") + 1]
    state_mount = [m["mountPath"] for m in coord["volumeMounts"] if m["name"] == "state"]
    check("--state lies on the PersistentVolumeClaim",
          bool(state_mount) and state_arg.startswith(state_mount[0] + "/")
          and [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"], state_arg)
    ns_host = f"{svc['metadata']['name']}.render.svc.cluster.local:{svc['spec']['ports'][0]['port']}"
    check("ConfigMap DP_COORDINATOR is the Service (namespace render)", cm["data"]["DP_COORDINATOR"] == f"tcp://{ns_host}",
          cm["data"]["DP_COORDINATOR"])
    check("Deployment selector matches its pod labels", subset(dep["spec"]["selector"]["matchLabels"], dep_labels))
    check("PodDisruptionBudget selects the workers", subset(pdb["spec"]["selector"]["matchLabels"], dep_labels))
    worker = dep["spec"]["template"]["spec"]["containers"][0]
    threads = worker["args"][worker["args"].index("--threads") + 1]
    check("worker --threads equals its CPU request", str(worker["resources"]["requests"]["cpu"]) == threads,
          f"--threads {threads}, cpu request {worker['resources']['requests']['cpu']}")
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    check(f"worker grace period exceeds the hand-back bound ({HAND_BACK_BOUND_S} s)", grace > HAND_BACK_BOUND_S, str(grace))
    for kind, d in (("StatefulSet", sts), ("Deployment", dep)):
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        keys = [v for v in spec["volumes"] if v["name"] == "keys"]
        check(f"{kind}: keys Secret is mounted read-only, owner-only (0400) and required (no keys, no start)",
              bool(keys) and not keys[0]["secret"].get("optional") and keys[0]["secret"].get("defaultMode") == 0o400
              and any(m["name"] == "keys" and m.get("readOnly") for m in c["volumeMounts"]))
        check(f"{kind}: runs as non-root without privilege escalation",
              spec["securityContext"].get("runAsNonRoot") is True
              and c["securityContext"].get("allowPrivilegeEscalation") is False)

    print("k8s check: the manifests' commands and probes against the built binaries")
    for b in ("dp-coord", "dp-worker"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            check(f"{BIN}/{b} is built", False, "run swift build first")
            return
    work = tempfile.mkdtemp(prefix="dp-k8s-check-")
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.pop("DP_COORDINATOR", None)
    procs = []
    try:
        # The keys the pods mount under /etc/dp-farm, made with the binaries' keygen in a folder of ours.
        etc = os.path.join(work, "etc-dp-farm")
        for d in ("keys", "workers.d", "clients.d", "admins.d"):
            os.makedirs(os.path.join(etc, d))
        for tool, name in (("dp-coord", "coordinator"), ("dp-worker", "worker")):
            subprocess.run([os.path.join(BIN, tool), "keygen", os.path.join(etc, "keys", name)], check=True,
                           stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(etc, "keys", "worker.pub"), os.path.join(etc, "workers.d", "worker.pub"))
        local = lambda a: a.replace("/etc/dp-farm", etc)
        coord = localize(coord, local)
        worker = localize(worker, local)
        port = free_port()
        endpoint = f"tcp://127.0.0.1:{port}"
        cargs = [a.replace(":5555", f":{port}").replace("0.0.0.0", "127.0.0.1") for a in coord["args"]]
        cargs = [a.replace(state_mount[0], os.path.join(work, "coord")) for a in cargs]
        clog = open(os.path.join(work, "coord.log"), "w")
        cproc = subprocess.Popen(cargs, env=env, stdout=clog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(cproc)
        pod_env = dict(env, DP_COORDINATOR=endpoint, POD_NAME="dp-worker-5d8f-probe")
        wargs = [expand(a, pod_env).replace("/cache/models", os.path.join(work, "cache")) for a in worker["args"]]
        wargs[wargs.index("--threads") + 1] = "1"  # this machine's size; the flag itself is what is checked
        wlog = open(os.path.join(work, "worker.log"), "w")

        def probe_coord(p, timeout=30):
            # The coordinator probe names tcp://127.0.0.1:5555 (inside the pod); here, the test's port.
            q = {"exec": {"command": [a.replace(":5555", f":{port}") for a in p["exec"]["command"]]}}
            return run_probe(q, env, timeout)

        deadline = time.time() + 120
        rc = None
        while time.time() < deadline:
            rc = probe_coord(coord["readinessProbe"])
            if rc == 0:
                break
            time.sleep(0.5)
        check("coordinator starts with the StatefulSet's args; its readiness probe passes", rc == 0, f"exit {rc}")
        check("coordinator liveness probe passes", probe_coord(coord["livenessProbe"]) == 0)
        wproc = subprocess.Popen(wargs, env=pod_env, stdout=wlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(wproc)
        deadline = time.time() + 120
        while time.time() < deadline:
            rc = run_probe(worker["readinessProbe"], pod_env, 30)
            if rc == 0:
                break
            time.sleep(0.5)
        check("worker starts with the Deployment's args; its readiness probe passes", rc == 0, f"exit {rc}")
        check("worker liveness probe passes", run_probe(worker["livenessProbe"], pod_env, 30) == 0)
        stranger = dict(pod_env, POD_NAME="dp-worker-not-registered")
        check("readiness fails for a worker the coordinator does not list",
              run_probe(worker["readinessProbe"], stranger, 30) not in (0, "timeout"))
        check("liveness fails for a worker the coordinator does not list",
              run_probe(worker["livenessProbe"], stranger, 30) not in (0, "timeout"))
        # SIGTERM as Kubernetes sends it: the worker leaves well within its grace period.
        t0 = time.time()
        wproc.terminate()
        try:
            wrc = wproc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            wrc = "still running"
        check(f"worker exits on SIGTERM within the grace period ({grace} s)", wrc == 0,
              f"exit {wrc} after {time.time() - t0:.1f} s")
        cproc.terminate()
        cproc.wait(timeout=60)
        check("coordinator probe fails once the coordinator is gone", probe_coord(coord["livenessProbe"]) not in (0, "timeout"))
        check("worker readiness fails while the coordinator is gone", run_probe(worker["readinessProbe"], pod_env, 30) != 0)
        check("worker liveness still passes while the coordinator is gone (no restart storm)",
              run_probe(worker["livenessProbe"], pod_env, 30) == 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if failed:
            print(f"k8s check: logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    print(f"k8s-check: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
