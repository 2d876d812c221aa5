#!/usr/bin/env python3
"""Convert DreamPose's released checkpoints into a `dreampose-model/1` folder.

The layout written is the one in ../shared/docs/model-format.md:

    <out>/dreampose.json
    <out>/unet/{config.json, diffusion_pytorch_model.safetensors}
    <out>/vae/{config.json, diffusion_pytorch_model.safetensors}
    <out>/image_encoder/{config.json, model.safetensors}
    <out>/adapter/{config.json, adapter.safetensors}
    <out>/scheduler/scheduler_config.json

Inputs (the files DreamPose's README tells you to download, plus CLIP):

* `unet_epoch_<E>.pth`  the whole UNet2DConditionModel state dict (conv_in takes 14 channels),
                        possibly with a `module.` prefix (DataParallel) or wrapped in {"state_dict": ...};
* `adapter_<E>.pth`     the `Embedding_Adapter` state dict of models/unet_dual_encoder.py in the
                        authors' repository: `vae2clip.{weight,bias}` (Linear(1280, 768)) and
                        `linear1.{weight,bias}` (Linear(54, 50), mixes tokens);
* `vae_<N>.pth`         (optional) the fine-tuned AutoencoderKL state dict; old diffusers attention
                        names (query/key/value/proj_attn) are renamed to to_q/to_k/to_v/to_out.0.
                        Without it the VAE weights come from `checkpoint-<E>/vae/`;
* `checkpoint-<E>/`     the diffusers pipeline folder next to them: unet/config.json (its in_channels is
                        still SD's 4; the output says 14), vae/config.json, scheduler/scheduler_config.json;
* a CLIP ViT-B/32 checkpoint folder (config.json + model.safetensors or pytorch_model.bin), a full
  CLIPModel (text tower and projections are dropped) or a CLIPVisionModel.

Every input can also be named one by one (--unet, --unet-config, ...). Everything is loaded and
checked before anything is written; the output folder appears whole or not at all (it is written
into a temporary sibling folder which is then renamed).

Needs torch (the CPU wheel is enough) and safetensors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

FORMAT = "dreampose-model/1"
POSE_WINDOW = 5  # DreamPose conditions on poses n-2..n+2, two UV channels each.
DEFAULT_SCALING_FACTOR = 0.18215  # SD-1.x VAE; older vae/config.json files do not carry it.

# CLIPVisionConfig defaults in transformers (= ViT-B/32), for configs that leave keys out.
CLIP_VISION_DEFAULTS: Dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}
# Key families of a full CLIPModel checkpoint that the vision tower does not use.
CLIP_IGNORED_PREFIXES = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")
CLIP_IGNORED_KEYS = ("embeddings.position_ids",)  # a buffer, not a weight

# Old diffusers (< 0.15) names of the VAE mid-block attention -> current names.
OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
OLD_VAE_ATTENTION_RE = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")

SCHEDULER_SAMPLERS = {"PNDMScheduler": "pndm", "DDIMScheduler": "ddim"}

StateDict = Dict[str, torch.Tensor]


class ConversionError(Exception):
    """A problem with the inputs; the message names the file, the key and what was expected."""


# ---------------------------------------------------------------------------------------------
# Reading


def read_json(path: Path, what: str) -> Dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{what}: {path} does not exist")
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{what}: cannot read {path} as JSON: {error}") from error
    if not isinstance(value, dict):
        raise ConversionError(f"{what}: {path} holds a {type(value).__name__}, expected a JSON object")
    return value


def load_state_dict(path: Path, what: str) -> StateDict:
    """Loads a .pth/.bin (torch.save) or .safetensors state dict.

    Unwraps {"state_dict": ...} and strips a `module.` prefix (DataParallel) from every key that has it.
    """
    if not path.is_file():
        raise ConversionError(f"{what}: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            raw: Any = load_file(str(path))
        else:
            # weights_only: a checkpoint is data, never code to run.
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many kinds for truncated files
        raise ConversionError(f"{what}: cannot read {path} (truncated or not a checkpoint?): {error}") from error
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise ConversionError(f"{what}: {path} holds no state dict (found {type(raw).__name__})")
    state: StateDict = OrderedDict()
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{what}: {path}: key {key!r} holds a {type(value).__name__}, expected a tensor")
        name = key[len("module."):] if key.startswith("module.") else key
        if name in state:
            raise ConversionError(f"{what}: {path}: key {name!r} appears both with and without 'module.'")
        state[name] = value
    return state


def require(state: StateDict, key: str, what: str, source: Path) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"{what}: {source} has no tensor {key!r}")
    return state[key]


def check_shape(tensor: torch.Tensor, expected: List[Optional[int]], key: str, what: str, source: Path) -> None:
    """`expected` may hold None for a dimension that is free."""
    shape = list(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        shown = ["*" if e is None else e for e in expected]
        raise ConversionError(f"{what}: {source}: {key} has shape {shape}, expected {shown}")


# ---------------------------------------------------------------------------------------------
# Components


def convert_unet(state: StateDict, config: Dict[str, Any], source: Path, config_path: Path) -> Dict[str, Any]:
    """Checks the UNet against its config; returns the config to write (in_channels from conv_in)."""
    what = "UNet"
    config = dict(config)
    latent = int(config.get("out_channels", 4))
    block_out = config.get("block_out_channels")
    if not isinstance(block_out, list) or not block_out:
        raise ConversionError(f"{what}: {config_path} has no block_out_channels list")
    in_channels = latent + 2 * POSE_WINDOW
    conv_in = require(state, "conv_in.weight", what, source)
    check_shape(conv_in, [block_out[0], in_channels, 3, 3], "conv_in.weight", what, source)
    conv_out = require(state, "conv_out.weight", what, source)
    check_shape(conv_out, [latent, block_out[0], 3, 3], "conv_out.weight", what, source)
    if config.get("in_channels") != in_channels:
        # DreamPose swapped conv_in after loading SD, so the saved config still says 4.
        print(f"note: {config_path}: in_channels {config.get('in_channels')} -> {in_channels} "
              f"(conv_in.weight is {list(conv_in.shape)})", file=sys.stderr)
        config["in_channels"] = in_channels
    cross = config.get("cross_attention_dim")
    to_k = [k for k in state if k.endswith(".attn2.to_k.weight")]
    if not to_k:
        raise ConversionError(f"{what}: {source} has no cross-attention weights (*.attn2.to_k.weight)")
    for key in to_k:
        if state[key].dim() != 2 or state[key].shape[1] != cross:
            raise ConversionError(f"{what}: {source}: {key} has shape {list(state[key].shape)}, "
                                  f"expected [*, {cross}] (cross_attention_dim in {config_path})")
    return config


def convert_vae(state: StateDict, config: Dict[str, Any], source: Path, config_path: Path) -> StateDict:
    """Renames old attention keys and checks the VAE's ends against its config."""
    what = "VAE"
    renamed: StateDict = OrderedDict()
    origin: Dict[str, str] = {}
    for key, value in state.items():
        match = OLD_VAE_ATTENTION_RE.match(key)
        name = f"{match[1]}{OLD_VAE_ATTENTION[match[2]]}.{match[3]}" if match else key
        if name in renamed:
            raise ConversionError(f"{what}: {source}: {origin[name]!r} and {key!r} are both present "
                                  f"(both mean {name!r})")
        renamed[name] = value
        origin[name] = key
    block_out = config.get("block_out_channels")
    latent = config.get("latent_channels")
    if not isinstance(block_out, list) or not block_out or not isinstance(latent, int):
        raise ConversionError(f"{what}: {config_path} needs block_out_channels (a list) and latent_channels")
    channels = int(config.get("in_channels", 3))
    check_shape(require(renamed, "encoder.conv_in.weight", what, source), [block_out[0], channels, 3, 3],
                "encoder.conv_in.weight", what, source)
    check_shape(require(renamed, "encoder.conv_out.weight", what, source), [2 * latent, block_out[-1], 3, 3],
                "encoder.conv_out.weight", what, source)
    check_shape(require(renamed, "decoder.conv_in.weight", what, source), [block_out[-1], latent, 3, 3],
                "decoder.conv_in.weight", what, source)
    return renamed


def clip_vision_config(raw: Dict[str, Any], config_path: Path) -> Dict[str, Any]:
    """A CLIPVisionConfig dict from a CLIPConfig (vision_config inside) or a CLIPVisionConfig."""
    if "vision_config" in raw:
        vision = raw["vision_config"]
        if not isinstance(vision, dict):
            raise ConversionError(f"CLIP: {config_path}: vision_config is not an object")
    else:
        vision = raw
    out = dict(CLIP_VISION_DEFAULTS)
    out.update({k: v for k, v in vision.items() if not k.startswith("_") and k != "transformers_version"})
    out["architectures"] = ["CLIPVisionModel"]
    out["model_type"] = "clip_vision_model"
    return out


def convert_clip(state: StateDict, config: Dict[str, Any], source: Path, config_path: Path) -> StateDict:
    """Keeps the vision tower (keys without `vision_model.`) and checks it against the config."""
    what = "CLIP"
    vision: StateDict = OrderedDict()
    for key, value in state.items():
        name = key[len("vision_model."):] if key.startswith("vision_model.") else key
        if key.startswith(CLIP_IGNORED_PREFIXES) or name in CLIP_IGNORED_KEYS:
            continue
        if name in vision:
            raise ConversionError(f"{what}: {source}: {key!r} appears both with and without 'vision_model.'")
        vision[name] = value
    hidden = int(config["hidden_size"])
    patch = int(config["patch_size"])
    image = int(config["image_size"])
    tokens = (image // patch) ** 2 + 1
    check_shape(require(vision, "embeddings.class_embedding", what, source), [hidden],
                "embeddings.class_embedding", what, source)
    check_shape(require(vision, "embeddings.patch_embedding.weight", what, source),
                [hidden, int(config["num_channels"]), patch, patch], "embeddings.patch_embedding.weight", what, source)
    check_shape(require(vision, "embeddings.position_embedding.weight", what, source), [tokens, hidden],
                "embeddings.position_embedding.weight", what, source)
    layers = {int(m[1]) for k in vision if (m := re.match(r"^encoder\.layers\.(\d+)\.", k))}
    if layers != set(range(int(config["num_hidden_layers"]))):
        raise ConversionError(f"{what}: {source} has encoder layers {sorted(layers)}, expected "
                              f"0..{int(config['num_hidden_layers']) - 1} (num_hidden_layers in {config_path})")
    check_shape(require(vision, "encoder.layers.0.mlp.fc1.weight", what, source),
                [int(config["intermediate_size"]), hidden], "encoder.layers.0.mlp.fc1.weight", what, source)
    if hidden % int(config["num_attention_heads"]) != 0:
        raise ConversionError(f"{what}: {config_path}: hidden_size {hidden} is not a multiple of "
                              f"num_attention_heads {config['num_attention_heads']}")
    return vision


def convert_adapter(state: StateDict, source: Path, height: int, width: int, vae_tokens: int,
                    clip_tokens: int, hidden: int) -> Tuple[StateDict, Dict[str, int]]:
    """The authors' Embedding_Adapter: MaxPool2d(2) -> vae2clip (per latent channel) -> linear1 (tokens)."""
    what = "adapter"
    expected = {"vae2clip.weight", "vae2clip.bias", "linear1.weight", "linear1.bias"}
    extra = sorted(set(state) - expected)
    if extra:
        raise ConversionError(f"{what}: {source} has unexpected tensors {extra}; expected {sorted(expected)}")
    vae2clip = require(state, "vae2clip.weight", what, source)
    linear1 = require(state, "linear1.weight", what, source)
    if vae2clip.dim() != 2 or linear1.dim() != 2:
        raise ConversionError(f"{what}: {source}: vae2clip.weight {list(vae2clip.shape)} and linear1.weight "
                              f"{list(linear1.shape)} must both be matrices")
    if height <= 0 or width <= 0 or height % 64 or width % 64:
        raise ConversionError(f"frame size {height}x{width} (height x width) must be a positive multiple of 64 "
                              f"on both sides")
    features = (height // 16) * (width // 16)  # latent H/8 x W/8, max-pooled by 2
    if vae2clip.shape[1] != features:
        raise ConversionError(
            f"{what}: {source}: vae2clip.weight is {list(vae2clip.shape)}: vae_features {vae2clip.shape[1]} "
            f"does not fit a {height}x{width} frame, which needs (H/16)*(W/16) = {features}; "
            f"pass the size the model was trained for with --height/--width")
    config = {"clip_tokens": clip_tokens, "vae_tokens": vae_tokens, "vae_features": features, "hidden": hidden}
    check_shape(vae2clip, [hidden, features], "vae2clip.weight", what, source)
    check_shape(require(state, "vae2clip.bias", what, source), [hidden], "vae2clip.bias", what, source)
    check_shape(linear1, [clip_tokens, clip_tokens + vae_tokens], "linear1.weight", what, source)
    check_shape(require(state, "linear1.bias", what, source), [clip_tokens], "linear1.bias", what, source)
    ordered = OrderedDict((k, state[k]) for k in ("vae2clip.weight", "vae2clip.bias", "linear1.weight", "linear1.bias"))
    return ordered, config


def scheduler_sampler(config: Dict[str, Any], path: Path) -> str:
    name = config.get("_class_name")
    if name not in SCHEDULER_SAMPLERS:
        raise ConversionError(f"scheduler: {path}: _class_name {name!r}, expected one of {sorted(SCHEDULER_SAMPLERS)}")
    return SCHEDULER_SAMPLERS[name]


# ---------------------------------------------------------------------------------------------
# Writing


def cast(state: StateDict, dtype: str) -> StateDict:
    target = {"float32": torch.float32, "float16": torch.float16}.get(dtype)
    out: StateDict = OrderedDict()
    for key, value in state.items():
        if target is not None and value.is_floating_point():
            value = value.to(target)
        # safetensors wants each tensor contiguous and owning its storage.
        out[key] = value.detach().contiguous().clone()
    return out


def json_bytes(value: Dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def model_id(folder: Path) -> str:
    """SHA-256 over `<relative path>\\0<hex sha256>\\n` lines in bytewise path order (model-format.md)."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(folder).as_posix().encode())
    lines = hashlib.sha256()
    for path in files:
        rel = path.relative_to(folder).as_posix()
        lines.update(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return lines.hexdigest()


def write_model(out: Path, jsons: Dict[str, Dict[str, Any]], tensors: Dict[str, StateDict], overwrite: bool) -> None:
    """Writes every file into a temporary sibling folder, then renames it to `out`."""
    out = out.absolute()
    if out.exists() and not overwrite:
        raise ConversionError(f"output {out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        for rel, value in jsons.items():
            (temp / rel).parent.mkdir(parents=True, exist_ok=True)
            (temp / rel).write_bytes(json_bytes(value))
        for rel, state in tensors.items():
            (temp / rel).parent.mkdir(parents=True, exist_ok=True)
            save_file(state, str(temp / rel), metadata={"format": "pt"})
        for path in temp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        if out.exists():
            os.rename(out, old)
        os.rename(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Command line


def find_weights(folder: Path, names: List[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ConversionError(f"{what}: {folder} holds none of {names}")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", type=Path, help="DreamPose release folder (unet_epoch_<E>.pth, adapter_<E>.pth, "
                                               "checkpoint-<E>/)")
    p.add_argument("--epoch", type=int, help="the <E> of the release files")
    p.add_argument("--unet", type=Path, help="UNet state dict (default FOLDER/unet_epoch_E.pth)")
    p.add_argument("--unet-config", type=Path, help="default FOLDER/checkpoint-E/unet/config.json")
    p.add_argument("--adapter", type=Path, help="adapter state dict (default FOLDER/adapter_E.pth)")
    p.add_argument("--vae", type=Path, help="fine-tuned VAE state dict, e.g. vae_1499.pth "
                                            "(default: the weights in FOLDER/checkpoint-E/vae/)")
    p.add_argument("--vae-config", type=Path, help="default FOLDER/checkpoint-E/vae/config.json")
    p.add_argument("--scheduler-config", type=Path,
                   help="default FOLDER/checkpoint-E/scheduler/scheduler_config.json")
    p.add_argument("--clip", type=Path, required=True,
                   help="CLIP ViT-B/32 folder (config.json + model.safetensors or pytorch_model.bin), "
                        "or a weights file together with --clip-config")
    p.add_argument("--clip-config", type=Path, help="CLIPConfig or CLIPVisionConfig json (default CLIP/config.json)")
    p.add_argument("--out", type=Path, required=True, help="the model folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--name", help="model name in dreampose.json (default: the output folder's name)")
    p.add_argument("--height", type=int, default=640, help="frame height in pixels (default 640)")
    p.add_argument("--width", type=int, default=512, help="frame width in pixels (default 512)")
    p.add_argument("--dtype", choices=["float32", "float16", "keep"], default="float32",
                   help="tensor type written (default float32; keep = as in the inputs)")
    p.add_argument("--steps", type=int, default=100, help="default denoising steps (default 100)")
    p.add_argument("--sampler", choices=sorted(SCHEDULER_SAMPLERS.values()),
                   help="default sampler (default: the scheduler config's class)")
    p.add_argument("--image-guidance", type=float, default=8.0, help="default s1 (default 8.0)")
    p.add_argument("--pose-guidance", type=float, default=3.0, help="default s2 (default 3.0)")
    return p.parse_args(argv)


def input_paths(args: argparse.Namespace) -> Dict[str, Path]:
    """Resolves each input from its own flag or from --folder/--epoch."""
    checkpoint = args.folder / f"checkpoint-{args.epoch}" if args.folder is not None and args.epoch is not None else None
    defaults = {
        "unet": ("unet_epoch_{E}.pth", args.unet),
        "adapter": ("adapter_{E}.pth", args.adapter),
        "unet_config": ("checkpoint-{E}/unet/config.json", args.unet_config),
        "vae_config": ("checkpoint-{E}/vae/config.json", args.vae_config),
        "scheduler_config": ("checkpoint-{E}/scheduler/scheduler_config.json", args.scheduler_config),
    }
    paths: Dict[str, Path] = {}
    for name, (pattern, given) in defaults.items():
        if given is not None:
            paths[name] = given
        elif checkpoint is not None:
            paths[name] = args.folder / pattern.format(E=args.epoch)
        else:
            flag = "--" + name.replace("_", "-")
            raise ConversionError(f"no {name.replace('_', ' ')}: pass {flag} or --folder and --epoch")
    if args.vae is not None:
        paths["vae"] = args.vae
    elif checkpoint is not None:
        paths["vae"] = find_weights(checkpoint / "vae", ["diffusion_pytorch_model.safetensors",
                                                         "diffusion_pytorch_model.bin"], "VAE")
    else:
        raise ConversionError("no VAE weights: pass --vae or --folder and --epoch")
    if args.clip.is_dir():
        paths["clip"] = find_weights(args.clip, ["model.safetensors", "pytorch_model.bin"], "CLIP")
        paths["clip_config"] = args.clip_config or args.clip / "config.json"
    else:
        if args.clip_config is None:
            raise ConversionError(f"CLIP: {args.clip} is a file: pass its config with --clip-config")
        paths["clip"] = args.clip
        paths["clip_config"] = args.clip_config
    return paths


def convert(args: argparse.Namespace) -> str:
    """Loads, checks and writes; returns the new model's id."""
    paths = input_paths(args)

    unet = load_state_dict(paths["unet"], "UNet")
    unet_config = convert_unet(unet, read_json(paths["unet_config"], "UNet config"), paths["unet"],
                               paths["unet_config"])

    vae_config = read_json(paths["vae_config"], "VAE config")
    vae = convert_vae(load_state_dict(paths["vae"], "VAE"), vae_config, paths["vae"], paths["vae_config"])
    latent_channels = int(vae_config["latent_channels"])
    if latent_channels != int(unet_config.get("out_channels", 4)):
        raise ConversionError(f"VAE latent_channels {latent_channels} ({paths['vae_config']}) != UNet out_channels "
                              f"{unet_config.get('out_channels')} ({paths['unet_config']})")

    clip_config = clip_vision_config(read_json(paths["clip_config"], "CLIP config"), paths["clip_config"])
    for key in ("dtype", "torch_dtype"):  # transformers' load-time default: say what was written
        if key in clip_config and args.dtype != "keep":
            clip_config[key] = args.dtype
    clip = convert_clip(load_state_dict(paths["clip"], "CLIP"), clip_config, paths["clip"], paths["clip_config"])
    hidden = int(clip_config["hidden_size"])
    if hidden != unet_config.get("cross_attention_dim"):
        raise ConversionError(f"CLIP hidden_size {hidden} ({paths['clip_config']}) != UNet cross_attention_dim "
                              f"{unet_config.get('cross_attention_dim')} ({paths['unet_config']})")
    clip_tokens = (int(clip_config["image_size"]) // int(clip_config["patch_size"])) ** 2 + 1

    adapter, adapter_config = convert_adapter(load_state_dict(paths["adapter"], "adapter"), paths["adapter"],
                                              args.height, args.width, latent_channels, clip_tokens, hidden)

    scheduler_config = read_json(paths["scheduler_config"], "scheduler config")
    sampler = args.sampler or scheduler_sampler(scheduler_config, paths["scheduler_config"])

    name = args.name or args.out.absolute().name
    dreampose = {
        "format": FORMAT,
        "name": name,
        "height": args.height,
        "width": args.width,
        "vae_scaling_factor": float(vae_config.get("scaling_factor", DEFAULT_SCALING_FACTOR)),
        "pose_window": POSE_WINDOW,
        "defaults": {"steps": args.steps, "sampler": sampler,
                     "image_guidance": args.image_guidance, "pose_guidance": args.pose_guidance},
    }
    jsons = {
        "dreampose.json": dreampose,
        "unet/config.json": unet_config,
        "vae/config.json": vae_config,
        "image_encoder/config.json": clip_config,
        "adapter/config.json": adapter_config,
        "scheduler/scheduler_config.json": scheduler_config,
    }
    tensors = {
        "unet/diffusion_pytorch_model.safetensors": cast(unet, args.dtype),
        "vae/diffusion_pytorch_model.safetensors": cast(vae, args.dtype),
        "image_encoder/model.safetensors": cast(clip, args.dtype),
        "adapter/adapter.safetensors": cast(adapter, args.dtype),
    }
    write_model(args.out, jsons, tensors, args.overwrite)
    return model_id(args.out)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        identity = convert(args)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({FORMAT}, {args.height}x{args.width}, {args.dtype})")
    print(f"model id: {identity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
