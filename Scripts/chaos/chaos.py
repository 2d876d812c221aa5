#!/usr/bin/env python3
"""The farm's chaos run: one job rendered through faults, then checked frame by frame.

A job of FRAMES frames of the tiny random-weight demo model (`dp-worker demo-assets`) is rendered by a keyed
(CurveZMQ) `dp-coord serve` on loopback with WORKERS `dp-worker` processes. While it runs:

* KILLS times a random worker is SIGKILLed at a random moment (mostly mid-frame) and started again;
* COORD_KILLS times the coordinator is SIGKILLed and started again on the same state folder and port;
* one worker talks to the coordinator through a TCP proxy that, once, stops forwarding in both
  directions for STALL seconds (connections stay open, bytes just stop: a cut-off network), then
  forwards again; the worker's reconnects during the cut go through the proxy too.

Then it prints, and writes as JSON with --json-out:

* frames lost: frames of the job without an output file (or the job not completed);
* frames written twice: frames whose file was replaced after it first appeared (watched by inode
  every few ms) or that have more than one accepted attempt in the coordinator's journal;
* byte-identical: whether every frame equals, byte for byte, the same frame rendered by a fault-free
  single-process `dp-worker render`.

The target is 0, 0, yes; the exit status is 0 only then. Standard library only (run by
Scripts/chaos.sh); the farm's binaries are the ones under --bin (default .build/release).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

FRAME_RE = re.compile(r"^frame_(\d+)\.png$")


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StallingProxy:
    """TCP proxy 127.0.0.1:listen -> 127.0.0.1:upstream that can stop forwarding for a while.

    While stalled, no byte moves in either direction and new connections are accepted but not
    forwarded, so both ends see a silent peer (as behind a cut link), not a closed connection.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.stopping = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.stopping.set()
        self.flowing.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connect, args=(down,), daemon=True).start()

    def _connect(self, down: socket.socket) -> None:
        self.flowing.wait()
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            up.settimeout(None)
        except OSError:
            down.close()  # the coordinator is down (killed): the worker retries
            return
        for a, b in ((down, up), (up, down)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(0.05)
            while not self.stopping.is_set():
                self.flowing.wait()
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                self.flowing.wait()  # a stall that began during recv holds this chunk back too
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class FileWatcher:
    """Polls the output folder: a frame file whose (inode, size, mtime) changes after it first appeared
    was written again."""

    def __init__(self, folder: Path, interval: float = 0.005):
        self.folder = folder
        self.interval = interval
        self.seen: dict[int, tuple[int, int, int]] = {}
        self.rewritten: set[int] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.scan()
            time.sleep(self.interval)

    def scan(self) -> None:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for e in entries:
            m = FRAME_RE.match(e.name)
            if not m:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            frame = int(m.group(1))
            old = self.seen.get(frame)
            if old is None:
                self.seen[frame] = key
            elif old != key:
                self.rewritten.add(frame)
                self.seen[frame] = key

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.scan()


class Farm:
    def __init__(self, args, work: Path, auth: dict):
        self.args = args
        self.bin = Path(args.bin)
        self.work = work
        self.auth = auth
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.state = work / "coord-state"
        self.coord: subprocess.Popen | None = None
        self.coord_starts = 0
        self.workers: dict[int, subprocess.Popen] = {}
        self.worker_starts: dict[int, int] = {}
        self.proxy = StallingProxy(self.port)
        self.lock = threading.Lock()

    # The coordinator.
    def start_coordinator(self) -> None:
        self.coord_starts += 1
        logf = open(self.work / f"coord-{self.coord_starts}.log", "wb")
        cmd = [str(self.bin / "dp-coord"), "serve", "--bind", self.endpoint, "--state", str(self.state),
               "--output-root", str(self.work / "outputs"),
               "--heartbeat-ms", str(self.args.heartbeat_ms), "--liveness", "5", "--grace", "3",
               "--stall-timeout", "60"] + self.auth.get("serve", [])
        self.coord = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:  # up when the port accepts connections
            if self.coord.poll() is not None:
                raise SystemExit(f"coordinator exited at start ({self.coord.returncode}); see {logf.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"coordinator did not listen on {self.endpoint} within 60 s; see {logf.name}")

    def kill_coordinator(self) -> None:
        assert self.coord is not None
        self.coord.send_signal(signal.SIGKILL)
        self.coord.wait()

    # Workers.
    def start_worker(self, i: int) -> None:
        n = self.worker_starts.get(i, 0) + 1
        self.worker_starts[i] = n
        via_proxy = i == self.args.workers - 1
        endpoint = f"tcp://127.0.0.1:{self.proxy.port}" if via_proxy else self.endpoint
        logf = open(self.work / f"worker-{i}-{n}.log", "wb")
        cmd = [str(self.bin / "dp-worker"), "--connect", endpoint, "--name", f"chaos-w{i}",
               "--cache", str(self.work / f"cache-{i}"), "--threads", "1",
               "--heartbeat-ms", str(self.args.heartbeat_ms)] + self.auth.get("worker", [])
        self.workers[i] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)

    def kill_worker(self, i: int) -> None:
        p = self.workers[i]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self) -> None:
        for p in list(self.workers.values()):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        if self.coord is not None and self.coord.poll() is None:
            self.coord.send_signal(signal.SIGTERM)
            try:
                self.coord.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.coord.kill()
                self.coord.wait()
        self.proxy.close()

    # The journal, read-only (it is the coordinator's; a killed coordinator leaves it consistent).
    def query(self, sql: str, params=()) -> list:
        db = self.state / "journal.sqlite"
        if not db.exists():
            return []
        for _ in range(50):
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as c:
                    return c.execute(sql, params).fetchall()
            except sqlite3.OperationalError:
                time.sleep(0.05)
        return []


def run_cli(cmd: list[str], what: str, timeout: float = 600) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{what} failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


def make_keys(bin_dir: Path, keys: Path) -> dict:
    """A keyed farm (CurveZMQ): the coordinator's pair, one worker key and one client key, admitted by folder."""
    keys.mkdir(parents=True)
    for d in ("workers", "clients"):
        (keys / d).mkdir()
    run_cli([str(bin_dir / "dp-coord"), "keygen", str(keys / "server")], "keygen server")
    run_cli([str(bin_dir / "dp-worker"), "keygen", str(keys / "worker")], "keygen worker")
    run_cli([str(bin_dir / "dp-coord"), "keygen", str(keys / "client")], "keygen client")
    shutil.copy(keys / "worker.pub", keys / "workers" / "worker.pub")
    shutil.copy(keys / "client.pub", keys / "clients" / "client.pub")
    server = ["--server-key", str(keys / "server.pub")]
    return {
        "serve": ["--key", str(keys / "server.key"), "--authorized-workers", str(keys / "workers"),
                  "--authorized-clients", str(keys / "clients")],
        "worker": ["--key", str(keys / "worker.key")] + server,
        "client": ["--key", str(keys / "client.key")] + server,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(Path(__file__).resolve().parents[2] / ".build" / "release"),
                    help="folder holding dp-coord and dp-worker (default .build/release)")
    ap.add_argument("--work", help="work folder (default: a new folder in /tmp, removed on success)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kills", type=int, default=10, help="worker SIGKILLs")
    ap.add_argument("--coord-kills", type=int, default=2, help="coordinator SIGKILL + restarts")
    ap.add_argument("--stall", type=float, default=30, help="seconds the proxied worker is cut off")
    ap.add_argument("--steps", type=int, default=40, help="denoising steps per frame (frame length)")
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    ap.add_argument("--json-out", help="write the figures here as JSON")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    bin_dir = Path(args.bin)
    for b in ("dp-coord", "dp-worker"):
        if not (bin_dir / b).exists():
            raise SystemExit(f"{bin_dir / b} not found: build first (swift build -c release) or pass --bin")

    work = Path(args.work) if args.work else Path(f"/tmp/dp-chaos-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log(f"work folder {work}")
    assets = work / "assets"
    run_cli([str(bin_dir / "dp-worker"), "demo-assets", "--out", str(assets), "--frames", str(args.frames)],
            "dp-worker demo-assets")
    job = ["--model", str(assets / "model"), "--subject", str(assets / "subject.png"),
           "--poses", str(assets / "poses"), "--steps", str(args.steps), "--seed", "3"]

    # The fault-free reference: one process, no farm.
    t0 = time.time()
    log(f"reference: dp-worker render of {args.frames} frames ({args.steps} steps each)")
    run_cli([str(bin_dir / "dp-worker"), "render"] + job + ["--out", str(work / "reference")],
            "reference render", timeout=args.timeout)
    log(f"reference done in {time.time() - t0:.0f} s")

    auth = make_keys(bin_dir, work / "keys")
    farm = Farm(args, work, auth)
    out = work / "outputs" / "chaos"   # the job's --out is a name inside the coordinator's --output-root
    watcher = FileWatcher(out)
    faults: list[str] = []
    figures: dict = {}
    try:
        farm.start_coordinator()
        for i in range(args.workers):
            farm.start_worker(i)
        sub = run_cli([str(bin_dir / "dp-coord"), "submit", "--coordinator", farm.endpoint, "--detach",
                       "--out", "chaos", "--name", "chaos"] + job + auth.get("client", []),
                      "dp-coord submit --detach")
        job_id = int(sub.strip().split()[-1])
        log(f"job {job_id} submitted to {farm.endpoint}; workers {args.workers} "
            f"(chaos-w{args.workers - 1} through the proxy on port {farm.proxy.port})")

        # The schedule, in fractions of the job's frames done: faults happen while frames render.
        events = [(rng.uniform(0.03, 0.85), "kill-worker") for _ in range(args.kills)]
        events += [(rng.uniform(0.15, 0.75), "kill-coordinator") for _ in range(args.coord_kills)]
        events.append((rng.uniform(0.2, 0.5), "stall"))
        events.sort()
        stall_until = None
        started = time.time()

        def done_frames() -> int:
            rows = farm.query("SELECT frames_done, state FROM jobs WHERE id = ?", (job_id,))
            return rows[0][0] if rows else 0

        def job_state() -> str:
            rows = farm.query("SELECT state FROM jobs WHERE id = ?", (job_id,))
            return rows[0][0] if rows else "?"

        last_report = 0.0
        while True:
            if time.time() - started > args.timeout:
                raise SystemExit(f"job not finished after {args.timeout:.0f} s; see {work}")
            if farm.coord is not None and farm.coord.poll() is not None:
                raise SystemExit(f"the coordinator exited by itself ({farm.coord.returncode}); see {work}")
            for i, p in farm.workers.items():
                if p.poll() is not None:
                    raise SystemExit(f"worker chaos-w{i} exited by itself ({p.returncode}); see {work}")
            done = done_frames()
            state = job_state()
            if state in ("completed", "failed", "cancelled"):
                break
            if stall_until is not None and time.time() >= stall_until:
                farm.proxy.resume()
                stall_until = None
                faults.append(f"{time.time() - started:6.1f} s  proxy forwards again")
                log(faults[-1])
            while events and done >= events[0][0] * args.frames:
                _, kind = events.pop(0)
                time.sleep(rng.uniform(0, 0.6))  # a random moment, mostly inside a frame
                if kind == "kill-worker":
                    i = rng.randrange(args.workers)
                    farm.kill_worker(i)
                    time.sleep(rng.uniform(0.2, 2.0))
                    farm.start_worker(i)
                    faults.append(f"{time.time() - started:6.1f} s  SIGKILL worker chaos-w{i}, restarted")
                elif kind == "kill-coordinator":
                    farm.kill_coordinator()
                    time.sleep(rng.uniform(0.5, 2.0))
                    farm.start_coordinator()
                    faults.append(f"{time.time() - started:6.1f} s  SIGKILL coordinator, restarted")
                else:
                    farm.proxy.stall()
                    stall_until = time.time() + args.stall
                    faults.append(f"{time.time() - started:6.1f} s  proxy cuts chaos-w{args.workers - 1} off "
                                  f"for {args.stall:.0f} s")
                log(faults[-1])
            if time.time() - last_report > 10:
                last_report = time.time()
                log(f"{done}/{args.frames} frames done")
            time.sleep(0.05)
        elapsed = time.time() - started
        if stall_until is not None:
            farm.proxy.resume()
        # Anything left in the schedule never happened: report it rather than claim it.
        figures["faults_not_injected"] = [k for _, k in events]
        figures["job_state"] = state
        figures["seconds"] = round(elapsed, 1)
        accepted = farm.query("SELECT frame, COUNT(*) FROM attempts WHERE job_id = ? AND result = 'ok' "
                              "GROUP BY frame HAVING COUNT(*) > 1", (job_id,))
        results = dict(farm.query("SELECT result, COUNT(*) FROM attempts WHERE job_id = ? GROUP BY result",
                                  (job_id,)))
    finally:
        watcher.stop()
        farm.stop_all()

    present = {int(m.group(1)) for p in out.iterdir() if (m := FRAME_RE.match(p.name))} if out.exists() else set()
    expected = set(range(args.frames))
    lost = sorted(expected - present)
    twice = sorted(watcher.rewritten | {f for f, _ in accepted})
    different = [f for f in sorted(expected & present)
                 if (out / f"frame_{f:05d}.png").read_bytes() != (work / "reference" / f"frame_{f:05d}.png").read_bytes()]
    identical = not lost and not different
    figures.update({
        "frames": args.frames, "workers": args.workers, "steps": args.steps,
        "faults": faults, "worker_kills": sum("SIGKILL worker" in f for f in faults),
        "coordinator_kills": sum("SIGKILL coordinator" in f for f in faults),
        "stalls": sum("cuts" in f for f in faults), "attempt_results": results,
        "frames_lost": len(lost), "lost": lost[:20], "frames_written_twice": len(twice), "written_twice": twice[:20],
        "frames_different": len(different), "different": different[:20], "byte_identical": identical,
    })
    print(f"chaos run: {args.frames} frames, {args.workers} workers, {figures['seconds']} s; "
          f"faults: {figures['worker_kills']} worker SIGKILLs, {figures['coordinator_kills']} coordinator "
          f"SIGKILL+restarts, {figures['stalls']} network cut of {args.stall:.0f} s")
    print(f"  job state:              {figures['job_state']}")
    print(f"  attempts by result:     {results}")
    print(f"  frames lost:            {len(lost)}" + (f"  {lost[:20]}" if lost else ""))
    print(f"  frames written twice:   {len(twice)}" + (f"  {twice[:20]}" if twice else ""))
    print(f"  byte-identical to a fault-free render: {'yes' if identical else 'no'}"
          + (f"  (different: {different[:20]})" if different else ""))
    if figures["faults_not_injected"]:
        print(f"  faults not injected (the job ended first): {figures['faults_not_injected']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
    ok = (figures["job_state"] == "completed" and not lost and not twice and identical
          and not figures["faults_not_injected"])
    if ok and not args.work:
        shutil.rmtree(work)
    elif not ok:
        print(f"  logs and outputs kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
