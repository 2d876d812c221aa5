#!/usr/bin/env python3
"""The other runtimes dp-farm is measured against (Scripts/bench_compare.sh drives this; not the render
path): the SD-1.5-size DreamPose UNet (14 input channels, 50 x 768 context) or the SD VAE decoder, random
weights, fp32, in PyTorch eager (diffusers) or OpenVINO (converted from the same diffusers module, CPU
plugin, f32 inference precision, the same thread count).

    python3 Scripts/bench/anchor.py torch|openvino unet --batch 3 --latent 80 64 --threads 2
    python3 Scripts/bench/anchor.py torch|openvino vae --image 640 512 --threads 2

Protocol (the same as `dp-bench unet|vae --stdin-driven`): after one warm-up run it prints READY; then each
line read on stdin runs one timed pass, answered with `TIME <seconds>`; at end of input `PEAK <GB>` (peak
RSS). One runtime per process, so several runtimes' passes can be interleaved A B A B by the driver.
"""
import argparse
import resource
import sys
import time

import torch

SD15_UNET = dict(
    sample_size=64, in_channels=14, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512,
    scaling_factor=0.18215,
)


def build(network: str, a: argparse.Namespace):
    """The module to time (positional inputs only) and its example inputs."""
    torch.manual_seed(0)
    if network == "unet":
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel(**SD15_UNET).eval()
        h, w = a.latent

        class Wrap(torch.nn.Module):
            def __init__(self, u):
                super().__init__()
                self.u = u

            def forward(self, x, t, c):
                return self.u(x, t, encoder_hidden_states=c, return_dict=False)[0]

        inputs = (torch.randn(a.batch, 14, h, w), torch.tensor([981.0] * a.batch), torch.randn(a.batch, 50, 768))
        return Wrap(unet).eval(), inputs
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(**SD15_VAE).eval()
    h, w = a.image

    class Decode(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, z):
            return self.v.decode(z, return_dict=False)[0]

    return Decode(vae).eval(), (torch.randn(1, 4, h // 8, w // 8),)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runtime", choices=["torch", "openvino"])
    p.add_argument("network", choices=["unet", "vae"])
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--latent", type=int, nargs=2, default=[80, 64], metavar=("H", "W"))
    p.add_argument("--image", type=int, nargs=2, default=[640, 512], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, inputs = build(a.network, a)
    if a.runtime == "torch":
        def run():
            with torch.inference_mode():
                return model(*inputs)
    else:
        import openvino as ov
        with torch.no_grad():
            converted = ov.convert_model(model, example_input=inputs)
        config = {"INFERENCE_NUM_THREADS": a.threads, "INFERENCE_PRECISION_HINT": "f32"}
        compiled = ov.Core().compile_model(converted, "CPU", config)
        del model, converted
        request = compiled.create_infer_request()
        feeds = [t.numpy() for t in inputs]

        def run():
            return request.infer(feeds)
    run()  # warm-up
    print("READY", flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        run()
        print(f"TIME {time.perf_counter() - t0:.4f}", flush=True)
    print(f"PEAK {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576:.2f}", flush=True)


if __name__ == "__main__":
    main()
