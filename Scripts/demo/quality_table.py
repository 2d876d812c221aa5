#!/usr/bin/env python3
"""Runs `dp-bench quality --json` on a model and a synth case for a list of sampler / steps / guidance settings
and prints a Markdown table (PERF.md, "Image quality of the demo model").

    python3 Scripts/demo/quality_table.py --bench .build/release/dp-bench --model Scripts/demo/model \
        --case Scripts/demo/case --frames 0-23 pndm:100:1:1 ddim:50:1:1 dpm:25:1:1 dpm:10:2:1.5 ...

Each setting is SAMPLER:STEPS:IMAGE_GUIDANCE:POSE_GUIDANCE.
"""
import argparse
import json
import subprocess
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bench", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--frames", default=None)
    p.add_argument("--seed", default="0")
    p.add_argument("--threads", default=None)
    p.add_argument("settings", nargs="+")
    a = p.parse_args()
    print("| sampler | steps | s_I | s_P | PSNR dB (min) | SSIM (min) | temporal | s / frame |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in a.settings:
        try:
            sampler, steps, si, sp = s.split(":")
        except ValueError:
            raise SystemExit(f"quality_table.py: setting {s!r} is not SAMPLER:STEPS:IMAGE_GUIDANCE:POSE_GUIDANCE")
        cmd = [a.bench, "quality", "--model", a.model, "--case", a.case, "--sampler", sampler, "--steps", steps,
               "--image-guidance", si, "--pose-guidance", sp, "--seed", a.seed, "--json"]
        if a.frames:
            cmd += ["--frames", a.frames]
        if a.threads:
            cmd += ["--threads", a.threads]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        temporal = f"{r['temporal']:+.2f}" if "temporal" in r else "n/a"
        print(f"| {sampler} | {steps} | {si} | {sp} | {r['mean_psnr']:.2f} ({min(r['psnr']):.2f}) | "
              f"{r['mean_ssim']:.4f} ({min(r['ssim']):.4f}) | {temporal} | {r['mean_seconds']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
