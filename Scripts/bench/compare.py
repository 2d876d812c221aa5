#!/usr/bin/env python3
"""Benchmarks of record: dp-farm against PyTorch eager and OpenVINO on the same CPU, interleaved.

Driven by Scripts/bench_compare.sh. For each network (the batch-3 80 x 64 UNet forward, the 640 x 512 VAE
decode) it starts one process per runtime (`dp-bench unet|vae --stdin-driven`, Scripts/bench/anchor.py
torch|openvino), one after the other, each doing its own build / conversion and one warm-up pass; then runs
rounds of one timed pass per runtime, turn by turn (A B C A B C ...), so every runtime sees the same machine
state. Prints per runtime the median and min seconds and peak RSS, and dp-farm's time as a ratio of each.
Refuses to start when the 1-minute load average is 0.5 or more (another process on a 2-core machine makes
OpenMP runtimes collapse and flatters us), unless --force.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Runner:
    """One runtime's process, speaking the READY / TIME / PEAK protocol on its stdin and stdout."""

    def __init__(self, name: str, argv: list, log):
        self.name, self.times, self.peak = name, [], None
        env = dict(os.environ)
        # "dp-farm:NAME=VALUE,..." runs dp-bench with those environment variables (e.g. DP_CONV3X3=im2col for an
        # A/B of one kernel choice in the same run).
        for assignment in name.partition(":")[2].split(","):
            if "=" in assignment:
                key, _, value = assignment.partition("=")
                env[key] = value
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                     text=True, bufsize=1, env=env)
        started = time.time()
        for line in self.proc.stdout:
            if line.startswith("READY"):
                print(f"  {name}: ready after {time.time() - started:.0f} s", flush=True)
                return
        raise SystemExit(f"bench_compare: {name} ended before it was ready (exit {self.proc.wait()}): {' '.join(argv)}")

    def run_once(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("TIME "):
                self.times.append(float(line.split()[1]))
                return self.times[-1]
        raise SystemExit(f"bench_compare: {self.name} ended during a timed run (exit {self.proc.wait()})")

    def finish(self) -> None:
        self.proc.stdin.close()
        for line in self.proc.stdout:
            if line.startswith("PEAK "):
                self.peak = float(line.split()[1])
        self.proc.wait()


def commands(network: str, runtime: str, a) -> list:
    if runtime.partition(":")[0] == "dp-farm":
        if network == "unet":
            return [a.dp_bench, "unet", "--preset", "sd15", "--height", str(a.latent[0]), "--width", str(a.latent[1]),
                    "--batch", str(a.batch), "--threads", str(a.threads), "--stdin-driven"]
        return [a.dp_bench, "vae", "--preset", "sd15", "--height", str(a.image[0]), "--width", str(a.image[1]),
                "--threads", str(a.threads), "--stdin-driven"]
    argv = [sys.executable, os.path.join(HERE, "anchor.py"), runtime, network, "--threads", str(a.threads)]
    if network == "unet":
        return argv + ["--batch", str(a.batch), "--latent", str(a.latent[0]), str(a.latent[1])]
    return argv + ["--image", str(a.image[0]), str(a.image[1])]


def compare(network: str, a, log) -> dict:
    shape = (f"batch {a.batch}, latent {a.latent[0]} x {a.latent[1]}" if network == "unet"
             else f"decode to {a.image[0]} x {a.image[1]}")
    print(f"== {network} ({shape}, {a.threads} threads, {a.rounds} interleaved rounds)", flush=True)
    runners = [Runner(rt, commands(network, rt, a), log) for rt in a.runtimes]
    for r in range(a.rounds):
        line = "  round %d:" % (r + 1)
        for runner in runners:
            line += f" {runner.name} {runner.run_once():.3f} s"
        print(line, flush=True)
    for runner in runners:
        runner.finish()
    ours = next((statistics.median(r.times) for r in runners if r.name.startswith("dp-farm")), None)
    others = [statistics.median(r.times) for r in runners if not r.name.startswith("dp-farm")]
    print(f"\n| runtime | median s | min s | peak RSS GB | dp-farm / runtime |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    rows = []
    for runner in runners:
        med = statistics.median(runner.times)
        ratio = f"{ours / med:.2f}x" if ours is not None else ""
        print(f"| {runner.name} | {med:.3f} | {min(runner.times):.3f} | {runner.peak or 0:.2f} | {ratio} |")
        rows.append({"runtime": runner.name, "median_s": med, "min_s": min(runner.times), "times": runner.times,
                     "peak_gb": runner.peak})
    if ours is not None and others:
        best = min(others)
        print(f"\ndp-farm / fastest other runtime: {ours / best:.2f}x (target <= 0.80x)\n", flush=True)
    return {"network": network, "shape": shape, "threads": a.threads, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dp-bench", required=True, help="path of the release dp-bench")
    p.add_argument("--networks", default="unet,vae", help="unet,vae (default both)")
    p.add_argument("--runtimes", default="dp-farm;torch;openvino",
                   help="';'-separated: dp-farm[:ENV=VALUE,...], torch, openvino (default all three), started in "
                        "this order; the ratios are of the first dp-farm")
    p.add_argument("--rounds", type=int, default=3, help="timed passes per runtime (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--latent", type=int, nargs=2, default=[80, 64], metavar=("H", "W"))
    p.add_argument("--image", type=int, nargs=2, default=[640, 512], metavar=("H", "W"))
    p.add_argument("--force", action="store_true", help="run even when the load average is 0.5 or more")
    p.add_argument("--json-out", help="also write the results to this file")
    p.add_argument("--log", default="/dev/null", help="where the runtimes' stderr goes (default /dev/null)")
    a = p.parse_args()
    a.runtimes = [r.strip() for r in a.runtimes.split(";") if r.strip()]
    for r in a.runtimes:
        if r.partition(":")[0] not in ("dp-farm", "torch", "openvino"):
            raise SystemExit(f"bench_compare: unknown runtime {r!r} (dp-farm[:ENV=VALUE,...], torch, openvino)")
    load = load_average()
    print(f"load average (1 min) before: {load:.2f}", flush=True)
    if load >= 0.5 and not a.force:
        raise SystemExit("bench_compare: the machine is busy (load average >= 0.5); a ratio taken now is not a "
                         "result. Wait for a quiet machine, or pass --force to measure anyway.")
    results = []
    with open(a.log, "a") as log:
        for network in [n.strip() for n in a.networks.split(",") if n.strip()]:
            if network not in ("unet", "vae"):
                raise SystemExit(f"bench_compare: unknown network {network!r} (unet, vae)")
            results.append(compare(network, a, log))
    print(f"load average (1 min) after: {load_average():.2f}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"load_before": load, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
