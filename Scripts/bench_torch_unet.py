#!/usr/bin/env python3
"""PyTorch baseline for `dp-bench unet`: times diffusers' UNet2DConditionModel (SD-1.5 config, 14 input
channels, 50-token 768-wide context, random weights) on the CPU, so PERF.md can state the engine's time as
a ratio measured in the same session. Not part of the render path.

    python3 Scripts/bench_torch_unet.py --height 64 --width 64 --batch 1 --threads 2 --iterations 3
"""
import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--height", type=int, default=64, help="latent height")
    p.add_argument("--width", type=int, default=64, help="latent width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=14, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()
    x = torch.randn(a.batch, 14, a.height, a.width)
    ctx = torch.randn(a.batch, 50, 768)
    times = []
    with torch.inference_mode():
        unet(x, 981, encoder_hidden_states=ctx)  # warm-up
        for i in range(a.iterations):
            t0 = time.perf_counter()
            unet(x, 981, encoder_hidden_states=ctx)
            times.append(time.perf_counter() - t0)
            print(f"  run {i + 1}: {times[-1]:.3f} s")
    print(f"torch {torch.__version__} unet batch {a.batch} latent {a.height}x{a.width} threads {a.threads}: "
          f"median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
