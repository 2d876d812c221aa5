#!/usr/bin/env python3
"""Parity check: one frame of a trained demo model rendered by PyTorch (diffusers' DDIM / DPM-Solver++ and
the DreamPose conditioning of train.py) and by the Swift engine (`dp-worker render`) from the same noise.

    python3 Scripts/demo/parity.py --model Scripts/demo/model --case DIR --frame 3 --worker PATH/dp-worker

Prints the largest per-channel difference and the PSNR between the two frames; exit 1 above --max-levels.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--case", type=Path, required=True)
    p.add_argument("--frame", type=int, default=0)
    p.add_argument("--worker", type=Path, required=True)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpm"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--image-guidance", type=float, default=1.0)
    p.add_argument("--pose-guidance", type=float, default=1.0)
    p.add_argument("--max-levels", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(2)
    from PIL import Image
    unet, vae, clip, adapter, sf = train.load_saved(a.model)
    subject, wins, truth = train.load_case(a.case, [a.frame])
    c_i, c_0 = train.conditioning(vae, clip, adapter, sf, subject)
    noise = torch.randn(1, 4, train.LH, train.LW, generator=torch.Generator().manual_seed(99))
    ref = train.sample(unet, vae, sf, c_i, c_0, subject, torch.from_numpy(wins[0]), noise, a.steps,
                       a.image_guidance, a.pose_guidance, a.sampler)
    with tempfile.TemporaryDirectory() as tmp:
        nf = Path(tmp) / "noise.f32"
        noise.numpy().astype("<f4").tofile(nf)
        subprocess.run([str(a.worker), "render", "--model", str(a.model), "--subject", str(a.case / "subject.png"),
                        "--poses", str(a.case / "poses"), "--out", tmp, "--frames", str(a.frame),
                        "--steps", str(a.steps), "--sampler", a.sampler, "--image-guidance", str(a.image_guidance),
                        "--pose-guidance", str(a.pose_guidance), "--noise", str(nf)], check=True)
        eng = np.array(Image.open(Path(tmp) / f"frame_{a.frame:05d}.png").convert("RGB"))
    d = np.abs(eng.astype(int) - ref.astype(int))
    print(f"parity frame {a.frame} ({a.sampler} {a.steps}): max |engine - torch| {d.max()} levels, "
          f"{(d.max(-1) > 1).mean() * 100:.2f} % of pixels > 1 level, PSNR(engine, torch) {train.psnr(eng, ref):.1f} dB; "
          f"vs truth: engine {train.psnr(eng, truth[0]):.2f} dB, torch {train.psnr(ref, truth[0]):.2f} dB")
    return 0 if d.max() <= a.max_levels else 1


if __name__ == "__main__":
    sys.exit(main())
