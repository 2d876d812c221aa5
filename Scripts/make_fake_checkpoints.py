#!/usr/bin/env python3
"""Write small fake DreamPose release files, for testing convert_dreampose_checkpoint.py.

The weights are those of an existing `dreampose-model/1` folder (by default the golden pipeline
model, ../shared/golden/pipeline-a1/model), re-saved the way DreamPose's release stores them, so a
conversion's output can be compared tensor by tensor with the folder it came from:

    OUT/unet_epoch_<E>.pth                    torch.save of the UNet state dict, every key `module.`-prefixed
    OUT/adapter_<E>.pth                       torch.save of the Embedding_Adapter state dict (vae2clip.*, linear1.*)
    OUT/vae_<V>.pth                           {"state_dict": VAE state dict} with the old diffusers attention
                                              names (query/key/value/proj_attn)
    OUT/checkpoint-<E>/unet/config.json       the UNet config with SD's in_channels 4, as DreamPose's pipeline
                                              folder has it (conv_in was swapped after loading)
    OUT/checkpoint-<E>/vae/config.json        without scaling_factor (older diffusers configs lack it)
    OUT/checkpoint-<E>/scheduler/scheduler_config.json
    OUT/clip/config.json                      a full CLIPConfig (vision_config inside, text_config beside it)
    OUT/clip/pytorch_model.bin                a full CLIPModel state dict: vision_model.* keys, a small random
                                              text tower, projections, logit_scale and the position_ids buffer

`--dtype float16` stores every floating tensor as float16 (DreamPose's fp16 revision).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict

import torch
from safetensors.torch import load_file

NEW_TO_OLD_VAE_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "golden" / "pipeline-a1" / "model"


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def write_json(path: Path, value: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def old_vae_names(state: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        for new, old in NEW_TO_OLD_VAE_ATTENTION.items():
            marker = f".attentions.0.{new}."
            if marker in key:
                key = key.replace(marker, f".attentions.0.{old}.")
                break
        out[key] = value
    return out


def fake_text_tower(hidden: int, generator: torch.Generator) -> "OrderedDict[str, torch.Tensor]":
    """A few tensors shaped like a CLIP text tower; the converter must drop them."""
    text = OrderedDict()
    text["text_model.embeddings.token_embedding.weight"] = torch.randn(16, hidden, generator=generator)
    text["text_model.embeddings.position_embedding.weight"] = torch.randn(8, hidden, generator=generator)
    text["text_model.embeddings.position_ids"] = torch.arange(8).unsqueeze(0)
    text["text_model.final_layer_norm.weight"] = torch.ones(hidden)
    text["text_model.final_layer_norm.bias"] = torch.zeros(hidden)
    text["text_projection.weight"] = torch.randn(hidden, hidden, generator=generator)
    return text


def make(model: Path, out: Path, epoch: int, vae_epoch: int, dtype: str) -> None:
    def cast(state: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        target = torch.float16 if dtype == "float16" else None
        return OrderedDict((k, v.to(target) if target is not None and v.is_floating_point() else v)
                           for k, v in state.items())

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"checkpoint-{epoch}"

    unet = load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors"))
    torch.save(cast(OrderedDict((f"module.{k}", v) for k, v in unet.items())), out / f"unet_epoch_{epoch}.pth")
    unet_config = read_json(model / "unet" / "config.json")
    unet_config["in_channels"] = 4
    write_json(checkpoint / "unet" / "config.json", unet_config)

    adapter = load_file(str(model / "adapter" / "adapter.safetensors"))
    torch.save(cast(adapter), out / f"adapter_{epoch}.pth")

    vae = load_file(str(model / "vae" / "diffusion_pytorch_model.safetensors"))
    torch.save({"state_dict": cast(old_vae_names(vae))}, out / f"vae_{vae_epoch}.pth")
    vae_config = read_json(model / "vae" / "config.json")
    vae_config.pop("scaling_factor", None)
    write_json(checkpoint / "vae" / "config.json", vae_config)

    write_json(checkpoint / "scheduler" / "scheduler_config.json",
               read_json(model / "scheduler" / "scheduler_config.json"))

    vision_config = read_json(model / "image_encoder" / "config.json")
    vision_config = vision_config.get("vision_config", vision_config)
    hidden = int(vision_config["hidden_size"])
    clip_config = {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": hidden,
        "text_config": {"hidden_size": hidden, "vocab_size": 16, "max_position_embeddings": 8},
        "vision_config": {k: v for k, v in vision_config.items() if k not in ("architectures", "model_type")},
    }
    write_json(out / "clip" / "config.json", clip_config)
    vision = load_file(str(model / "image_encoder" / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    full = OrderedDict((k if k.startswith("vision_model.") else f"vision_model.{k}", v) for k, v in vision.items())
    tokens = full["vision_model.embeddings.position_embedding.weight"].shape[0]
    full["vision_model.embeddings.position_ids"] = torch.arange(tokens).unsqueeze(0)
    full.update(fake_text_tower(hidden, generator))
    full["visual_projection.weight"] = torch.randn(hidden, hidden, generator=generator)
    full["logit_scale"] = torch.tensor(2.6592)
    torch.save(cast(full), out / "clip" / "pytorch_model.bin")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help=f"dreampose-model/1 folder whose weights to re-save (default {DEFAULT_MODEL})")
    p.add_argument("--out", type=Path, required=True, help="folder to write the fake release into")
    p.add_argument("--epoch", type=int, default=7, help="the <E> in unet_epoch_<E>.pth (default 7)")
    p.add_argument("--vae-epoch", type=int, default=15, help="the <V> in vae_<V>.pth (default 15)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = p.parse_args()
    make(args.model, args.out, args.epoch, args.vae_epoch, args.dtype)
    print(f"wrote fake DreamPose release files (epoch {args.epoch}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
