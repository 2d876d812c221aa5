#!/usr/bin/env python3
"""Train the dp-farm demo model: a small `dreampose-model/1` folder of DreamPose's real architecture, on the
synthetic subject world of synth.py, on the CPU.

    python3 Scripts/demo/train.py --seed 0 --out Scripts/demo/model

1. Data: `--clips` clips of synth.py's `random` motion (seeds derived from --seed), `--clip-frames` frames
   each, rendered at 128 x 128. Held-out dances (synth.py --motion dance) are never trained on.
2. VAE (diffusers AutoencoderKL, 4 levels -> latent = frame / 8): trained as an autoencoder on the frames
   (L1 + MSE, KL weight 1e-6); its latent scaling factor is set so scaled latents have unit variance.
3. CLIP (transformers CLIPVisionModel, ViT-B/32 structure, narrow): seeded random and frozen. There is one
   subject, so its output is a fixed code; what DreamPose learns on top of it, the adapter, is trained.
4. UNet (diffusers UNet2DConditionModel, 14 input channels = 4 latent + 10 pose) and the CLIP+VAE adapter:
   DreamPose's objective, epsilon prediction with the SD-1.5 noise schedule; conditioning exactly as at
   inference (../shared/docs/dreampose-inference.md): the subject through CLIP (last_hidden_state) and the
   VAE (0..255 pixels, posterior mean x scaling) into the adapter; the 5-pose window (n-2..n+2, edges
   repeat n) as 10 channels at latent size (nearest = pose pixel (8i, 8j)), p * 2 - 1. Conditions are dropped
   at random (pose only, image only, both) so dual classifier-free guidance works at inference; the null
   image is the adapter applied to the zero image, the null pose is zeros.
5. Exponential moving average of the UNet and adapter weights; those are saved.
6. Evaluation: a DDIM sampler in PyTorch (the engine's algorithm, diffusers' scheduler) renders held-out
   dance frames; PSNR / SSIM against the truth are printed and written to training.json.

Seeded (torch, numpy); torch.set_num_threads(--threads, default 1: the committed model was trained so, and other thread
counts give other bits). Prints progress with loss and ETA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402

H, W = synth.HEIGHT, synth.WIDTH
LH, LW = H // 8, W // 8
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
POSE_WINDOW = 5

SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1,
    "prediction_type": "epsilon", "timestep_spacing": "leading", "trained_betas": None, "clip_sample": False,
}


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------------------
# Data

def pose_windows(uv: np.ndarray, clip_len: int) -> np.ndarray:
    """uv: (N, 2, H, W) frames of consecutive clips of clip_len -> (N, 10, LH, LW) windows as the engine
    builds them (bilinear resize to the frame size is the identity here; *2-1; nearest to latent size)."""
    small = uv[:, :, ::8, ::8] * 2.0 - 1.0
    n = uv.shape[0]
    out = np.zeros((n, 2 * POSE_WINDOW, LH, LW), dtype=np.float32)
    half = POSE_WINDOW // 2
    for i in range(n):
        c0 = (i // clip_len) * clip_len
        for k, off in enumerate(range(-half, half + 1)):
            j = i + off
            if j < c0 or j >= c0 + clip_len:
                j = i
            out[i, 2 * k:2 * k + 2] = small[j]
    return out


def make_dataset(seed: int, clips: int, clip_len: int) -> Tuple[np.ndarray, np.ndarray]:
    imgs = np.zeros((clips * clip_len, H, W, 3), dtype=np.uint8)
    uvs = np.zeros((clips * clip_len, 2, H, W), dtype=np.float32)
    t0 = time.time()
    for c in range(clips):
        qs = synth.random_motion(seed * 100003 + c, clip_len)
        for n, q in enumerate(qs):
            imgs[c * clip_len + n], uvs[c * clip_len + n] = synth.render(q)
        if c % 20 == 19 or c == clips - 1:
            el = time.time() - t0
            log(f"data: {c + 1}/{clips} clips ({(c + 1) * clip_len} frames), {el:.0f} s, "
                f"ETA {el / (c + 1) * (clips - c - 1):.0f} s")
    return imgs, uvs


def load_case(case: Path, frames: List[int]) -> Tuple[np.ndarray, List[np.ndarray], np.ndarray]:
    from PIL import Image
    subject = np.array(Image.open(case / "subject.png").convert("RGB"))
    all_n = sorted(int(p.name.split("_")[1]) for p in (case / "poses").glob("frame_*_densepose.npy"))
    poses = {n: np.load(case / "poses" / f"frame_{n}_densepose.npy").astype(np.float32) for n in all_n}
    wins = []
    for n in frames:
        parts = []
        for off in range(-(POSE_WINDOW // 2), POSE_WINDOW // 2 + 1):
            p = poses.get(n + off, poses[n])
            parts.append(p[:, ::8, ::8] * 2.0 - 1.0)
        wins.append(np.concatenate(parts, 0)[None])
    truth = np.stack([np.array(Image.open(case / "truth" / f"frame_{n:05d}.png").convert("RGB")) for n in frames])
    return subject, wins, truth


# ----------------------------------------------------------------------------------------------------------
# Models

def build_models(args):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModel
    hidden = args.hidden
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(args.vae_channels), layers_per_block=1, norm_num_groups=8,
        act_fn="silu", sample_size=H, scaling_factor=0.18215)
    unet = UNet2DConditionModel(
        sample_size=LH, in_channels=4 + 2 * POSE_WINDOW, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=tuple(args.unet_channels), layers_per_block=1, attention_head_dim=4,
        cross_attention_dim=hidden, norm_num_groups=16, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
        use_linear_projection=False, downsample_padding=1, act_fn="silu")
    clip_cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                                num_attention_heads=2, image_size=224, patch_size=32, num_channels=3,
                                layer_norm_eps=1e-5, hidden_act="quick_gelu", projection_dim=hidden)
    clip = CLIPVisionModel(clip_cfg)
    features = (H // 16) * (W // 16)
    adapter = torch.nn.ModuleDict({
        "vae2clip": torch.nn.Linear(features, hidden),
        "linear1": torch.nn.Linear(50 + 4, 50),
    })
    with torch.no_grad():                          # DreamPose starts linear1 near "keep the CLIP tokens"
        adapter["linear1"].weight.copy_(torch.eye(50, 54) + 0.01 * torch.randn(50, 54))
        adapter["linear1"].bias.zero_()
    return vae, unet, clip, adapter


def clip_pixels(img: np.ndarray) -> torch.Tensor:
    """transformers' PIL CLIP preprocessing of an RGB uint8 image (shortest edge 224 BICUBIC, centre crop)."""
    from PIL import Image
    h, w = img.shape[:2]
    if h <= w:
        nh, nw = 224, int(224 * w / h)
    else:
        nh, nw = int(224 * h / w), 224
    im = Image.fromarray(img, "RGB")
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
    a = np.array(im)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    a = a[top:top + 224, left:left + 224]
    x = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def adapter_forward(adapter, c_clip: torch.Tensor, vae_latent: torch.Tensor) -> torch.Tensor:
    pooled = F.max_pool2d(vae_latent, 2)
    tokens = adapter["vae2clip"](pooled.flatten(2))                    # [B, 4, hidden]
    cat = torch.cat([c_clip, tokens], 1)                               # [B, 54, hidden]
    return adapter["linear1"](cat.transpose(1, 2)).transpose(1, 2)     # [B, 50, hidden]


# ----------------------------------------------------------------------------------------------------------
# Metrics (the same definitions as dp-bench quality)

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over channels: 7x7 uniform windows (valid), K1 0.01, K2 0.03, L 255, sample covariances."""
    from numpy.lib.stride_tricks import sliding_window_view
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(3):
        x = a[..., ch].astype(np.float64)
        y = b[..., ch].astype(np.float64)
        wx, wy = sliding_window_view(x, (7, 7)), sliding_window_view(y, (7, 7))
        mx, my = wx.mean((-1, -2)), wy.mean((-1, -2))
        n = 49
        vx = (wx ** 2).mean((-1, -2)) - mx ** 2
        vy = (wy ** 2).mean((-1, -2)) - my ** 2
        cxy = (wx * wy).mean((-1, -2)) - mx * my
        vx, vy, cxy = vx * n / (n - 1), vy * n / (n - 1), cxy * n / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        out.append(s.mean())
    return float(np.mean(out))


def to_frame(decoded: torch.Tensor) -> np.ndarray:
    """The engine's post-processing: clamp(x/2+0.5), round to uint8, global min-max stretch with floor."""
    x = (decoded[0].permute(1, 2, 0).double() / 2 + 0.5).clamp(0, 1).numpy()
    u8 = np.round(255 * x.astype(np.float32)).astype(np.float64)
    lo, hi = u8.min(), u8.max()
    if hi > lo:
        u8 = np.floor(255 * (u8 - lo) / (hi - lo))
    return u8.astype(np.uint8)


@torch.no_grad()
def sample(unet, vae, sf: float, c_i, c_0, subject: np.ndarray, window: torch.Tensor, noise: torch.Tensor,
           steps: int, s_img: float, s_pose: float, sampler: str = "ddim") -> np.ndarray:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    if sampler == "ddim":
        sched = DDIMScheduler.from_config(SCHEDULER_CONFIG, clip_sample=False)
    else:
        sched = DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    x_sub = torch.from_numpy(subject.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    z0 = vae.encode(x_sub).latent_dist.mean * sf
    x = sched.add_noise(z0, noise, sched.timesteps[:1])
    ctx = torch.cat([c_0, c_i, c_i])
    zeros = torch.zeros_like(window)
    pose3 = torch.cat([zeros, window, zeros])
    for t in sched.timesteps:
        inp = torch.cat([torch.cat([x] * 3), pose3], 1)
        e0, e1, e2 = unet(inp, t, encoder_hidden_states=ctx).sample.chunk(3)
        e = e0 + s_img * (e2 - e0) + s_pose * (e1 - e2)
        x = sched.step(e, t, x).prev_sample
    return to_frame(vae.decode(x / sf).sample)


# ----------------------------------------------------------------------------------------------------------
# Saving

def save_model(out: Path, vae, unet, clip, adapter, sf: float, dtype: str, defaults: Dict) -> None:
    from safetensors.torch import save_file
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix="." + out.name + ".staging-"))
    cast = torch.float16 if dtype == "float16" else torch.float32
    try:
        vae_out = type(vae).from_config(vae.config)
        vae_out.load_state_dict(vae.state_dict())
        vae_out.register_to_config(scaling_factor=sf)
        vae_out.to(cast).save_pretrained(tmp / "vae", safe_serialization=True)
        unet.to(cast).save_pretrained(tmp / "unet", safe_serialization=True)
        unet.to(torch.float32)
        clip.to(cast).save_pretrained(tmp / "image_encoder", safe_serialization=True)
        clip.to(torch.float32)
        (tmp / "adapter").mkdir()
        save_file({k: v.detach().to(cast).contiguous() for k, v in adapter.state_dict().items()},
                  str(tmp / "adapter" / "adapter.safetensors"))
        (tmp / "adapter" / "config.json").write_text(json.dumps(
            {"clip_tokens": 50, "vae_tokens": 4, "vae_features": (H // 16) * (W // 16),
             "hidden": clip.config.hidden_size}, indent=2) + "\n")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
        (tmp / "dreampose.json").write_text(json.dumps(
            {"format": "dreampose-model/1", "name": "dp-farm-demo (trained on Scripts/demo/synth.py)",
             "height": H, "width": W, "vae_scaling_factor": sf, "pose_window": POSE_WINDOW,
             "defaults": defaults}, indent=2) + "\n")
        keep = out / "README.md"
        if keep.exists():
            shutil.copy2(keep, tmp / "README.md")
        if out.exists():
            old = out.with_name("." + out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class EMA:
    def __init__(self, modules, decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def swap(self) -> None:
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def fmt_eta(sec: float) -> str:
    return f"{int(sec // 60)}m{int(sec % 60):02d}s"


def log_progress(stage: str, step: int, total: int, losses: list, t0: float) -> None:
    """Every 50 steps and at the last: the stage's step, mean loss of the last 50, seconds a step and ETA."""
    if step % 50 == 49 or step == total - 1:
        el = time.time() - t0
        log(f"{stage} step {step + 1}/{total} loss {np.mean(losses[-50:]):.4f} "
            f"{el / (step + 1):.2f} s/step ETA {fmt_eta(el / (step + 1) * (total - step - 1))}")


# ----------------------------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the committed model's bits; more threads change the reduction order)")
    p.add_argument("--clips", type=int, default=80)
    p.add_argument("--clip-frames", type=int, default=24)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-full-steps", type=int, default=250)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--unet-steps", type=int, default=5000)
    p.add_argument("--unet-batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--vae-channels", type=int, nargs=4, default=[16, 32, 64, 64])
    p.add_argument("--unet-channels", type=int, nargs=3, default=[64, 128, 128])
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--eval-case", type=Path, default=None,
                   help="a synth.py case (held-out dance) to evaluate on; default: seed 7 dance, 16 frames")
    p.add_argument("--eval-frames", type=int, nargs="*", default=[0, 5, 10, 15])
    p.add_argument("--eval-steps", type=int, default=20)
    args = p.parse_args()
    for name in ("threads", "clips", "clip_frames", "vae_batch", "unet_batch", "hidden", "eval_steps",
                 "vae_steps", "unet_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    for name in ("vae_full_steps",):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative (got {getattr(args, name)})")
    if args.vae_full_steps > args.vae_steps:
        p.error(f"--vae-full-steps ({args.vae_full_steps}) cannot exceed --vae-steps ({args.vae_steps})")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    cpu_start = time.process_time()
    figures: Dict = {"command": " ".join(["python3", "Scripts/demo/train.py"] + sys.argv[1:]),
                     "torch": torch.__version__}

    # 1. data
    imgs, uvs = make_dataset(args.seed, args.clips, args.clip_frames)
    windows = pose_windows(uvs, args.clip_frames)
    del uvs
    x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    n_frames = x_all.shape[0]
    figures["frames"] = n_frames
    data_s = time.time() - t_start

    vae, unet, clip, adapter = build_models(args)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("unet", unet), ("vae", vae), ("clip", clip), ("adapter", adapter))}
    log(f"parameters: {counts} (total {sum(counts.values()) / 1e6:.2f} M)")
    figures["parameters"] = counts

    # 2. VAE
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    t0 = time.time()
    losses = []
    for step in range(args.vae_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_steps, 1e-3, 50)
        idx = torch.from_numpy(rng.integers(0, n_frames, args.vae_batch))
        x = x_all[idx]
        if step < args.vae_steps - args.vae_full_steps:
            # 64 x 64 crops on the 8-pixel grid (4x cheaper); the last --vae-full-steps steps see whole frames
            oy = rng.integers(0, (H - 64) // 8 + 1, args.vae_batch) * 8
            ox = rng.integers(0, (W - 64) // 8 + 1, args.vae_batch) * 8
            x = torch.stack([x[i, :, oy[i]:oy[i] + 64, ox[i]:ox[i] + 64] for i in range(args.vae_batch)])
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        kl = post.kl().mean() / (H * W * 3)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        log_progress("vae", step, args.vae_steps, losses, t0)
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():
        means = torch.cat([vae.encode(x_all[i:i + 64]).latent_dist.mean for i in range(0, n_frames, 64)])
        sf = float(f"{1.0 / means.std().item():.5g}")
        latents = means * sf
        # reconstruction PSNR on the first (up to) 64 training frames (deterministic: posterior mean)
        n_rec = min(64, n_frames)
        rec = vae.decode(means[:n_rec]).sample
        rec_u8 = ((rec / 2 + 0.5).clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        vae_psnr = float(np.mean([psnr(rec_u8[i], imgs[i]) for i in range(n_rec)]))
    log(f"vae: scaling factor {sf}, reconstruction PSNR {vae_psnr:.2f} dB ({n_rec} training frames), "
        f"{time.time() - t0:.0f} s")
    figures["vae"] = {"steps": args.vae_steps, "full_frame_steps": args.vae_full_steps, "final_loss": float(np.mean(losses[-50:])),
                      "scaling_factor": sf, "recon_psnr_db": round(vae_psnr, 2),
                      "seconds": round(time.time() - t0, 1)}

    # 3. conditioning constants (CLIP frozen, VAE frozen): subject = the rest pose, as synth.py writes it
    subject, _ = synth.render(synth.REST_POSE)
    clip.eval()
    clip.requires_grad_(False)
    with torch.no_grad():
        c_clip = clip(pixel_values=clip_pixels(subject)).last_hidden_state
        c_clip0 = clip(pixel_values=clip_pixels(np.zeros((W, H, 3), np.uint8))).last_hidden_state
        lat_sub = vae.encode(torch.from_numpy(subject.astype(np.float32)).permute(2, 0, 1)[None]).latent_dist.mean * sf
        lat_null = vae.encode(torch.zeros(1, 3, W, H)).latent_dist.mean * sf

    # 4. UNet + adapter
    params = list(unet.parameters()) + list(adapter.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = EMA([unet, adapter], 0.999)
    from diffusers import DDPMScheduler
    abar = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod
    win_all = torch.from_numpy(windows)
    t0 = time.time()
    losses = []
    for step in range(args.unet_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.unet_steps, args.lr, 100)
        B = args.unet_batch
        idx = torch.from_numpy(rng.integers(0, n_frames, B))
        lat = latents[idx]
        pose = win_all[idx].clone()
        t = torch.from_numpy(rng.integers(0, 1000, B))
        r = torch.from_numpy(rng.random(B))
        drop_pose = (r < 0.1) | ((r >= 0.15) & (r < 0.25))      # 10 % pose only, 10 % both
        drop_img = (r >= 0.1) & (r < 0.25)                        # 5 % image only, 10 % both
        pose[drop_pose] = 0
        c_i = adapter_forward(adapter, c_clip, lat_sub)
        c_0 = adapter_forward(adapter, c_clip0, lat_null)
        ctx = torch.where(drop_img[:, None, None], c_0.expand(B, -1, -1), c_i.expand(B, -1, -1))
        noise = torch.randn(lat.shape)
        a = abar[t].float()[:, None, None, None]
        x_t = a.sqrt() * lat + (1 - a).sqrt() * noise
        pred = unet(torch.cat([x_t, pose], 1), t, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        losses.append(loss.item())
        log_progress("unet", step, args.unet_steps, losses, t0)
    ema.swap()
    unet.eval()
    figures["unet"] = {"steps": args.unet_steps, "batch": args.unet_batch, "final_loss": float(np.mean(losses[-100:])),
                       "seconds": round(time.time() - t0, 1)}
    train_wall = time.time() - t_start
    train_cpu = time.process_time() - cpu_start
    figures["train_wall_s"] = round(train_wall, 1)
    figures["train_cpu_s"] = round(train_cpu, 1)
    figures["data_s"] = round(data_s, 1)
    log(f"training done: wall {fmt_eta(train_wall)}, CPU (this process) {fmt_eta(train_cpu)}")

    # 5. save, then evaluate the saved weights (as the engine would load them)
    defaults = {"steps": 15, "sampler": "dpm", "image_guidance": 1.0, "pose_guidance": 2.0}   # PERF.md table
    old = args.out / "dreampose.json"
    if old.exists():
        defaults = json.loads(old.read_text()).get("defaults", defaults)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(args.out, vae, unet, clip, adapter, sf, args.dtype, defaults)
    log(f"saved {args.out}")

    figures["eval"] = evaluate(args)
    (args.out / "training.json").write_text(json.dumps(figures, indent=2) + "\n")
    log(json.dumps(figures["eval"]))
    return 0


def load_saved(model: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModel
    from safetensors.torch import load_file
    unet = UNet2DConditionModel.from_pretrained(model / "unet").float().eval()
    vae = AutoencoderKL.from_pretrained(model / "vae").float().eval()
    clip = CLIPVisionModel.from_pretrained(model / "image_encoder").float().eval()
    ad = load_file(str(model / "adapter" / "adapter.safetensors"))
    feats = ad["vae2clip.weight"].shape[1]
    hidden = ad["vae2clip.weight"].shape[0]
    adapter = torch.nn.ModuleDict({"vae2clip": torch.nn.Linear(feats, hidden), "linear1": torch.nn.Linear(54, 50)})
    adapter.load_state_dict({k: v.float() for k, v in ad.items()})
    sf = json.loads((model / "dreampose.json").read_text())["vae_scaling_factor"]
    return unet, vae, clip, adapter, sf


@torch.no_grad()
def conditioning(vae, clip, adapter, sf, subject):
    c_i = adapter_forward(adapter, clip(pixel_values=clip_pixels(subject)).last_hidden_state,
                          vae.encode(torch.from_numpy(subject.astype(np.float32)).permute(2, 0, 1)[None]).latent_dist.mean * sf)
    c_0 = adapter_forward(adapter, clip(pixel_values=clip_pixels(np.zeros((W, H, 3), np.uint8))).last_hidden_state,
                          vae.encode(torch.zeros(1, 3, W, H)).latent_dist.mean * sf)
    return c_i, c_0


def evaluate(args) -> Dict:
    case = args.eval_case
    if case is None:
        case = Path(tempfile.mkdtemp(prefix="dp-demo-eval-"))
        synth.write_case(case, 7, 16, "dance")
    unet, vae, clip, adapter, sf = load_saved(args.out)
    subject, wins, truth = load_case(case, args.eval_frames)
    c_i, c_0 = conditioning(vae, clip, adapter, sf, subject)
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(1, 4, LH, LW, generator=g)
    out = {"case": str(case) if args.eval_case else "synth.py --seed 7 --frames 16 --motion dance",
           "frames": args.eval_frames, "sampler": f"ddim {args.eval_steps}, guidance 1/1 (PyTorch)"}
    ps, ss = [], []
    t0 = time.time()
    for i, n in enumerate(args.eval_frames):
        fr = sample(unet, vae, sf, c_i, c_0, subject, torch.from_numpy(wins[i]), noise, args.eval_steps, 1.0, 1.0)
        ps.append(psnr(fr, truth[i]))
        ss.append(ssim(fr, truth[i]))
        from PIL import Image
        Image.fromarray(np.concatenate([truth[i], fr], 1)).save(f"/tmp/dp-demo-eval-{n}.png")
    out["psnr_db"] = round(float(np.mean(ps)), 2)
    out["ssim"] = round(float(np.mean(ss)), 4)
    out["per_frame_psnr"] = [round(x, 2) for x in ps]
    out["seconds"] = round(time.time() - t0, 1)
    return out


if __name__ == "__main__":
    sys.exit(main())
