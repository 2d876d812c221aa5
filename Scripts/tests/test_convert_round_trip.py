"""Fake release files made from the golden model convert back to the golden model's tensors and settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import EPOCH, SCRIPTS, VAE_EPOCH, convert_args, converter, fakes

WEIGHTS = {
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "image_encoder/model.safetensors",
    "adapter/adapter.safetensors",
}
LAYOUT = WEIGHTS | {"dreampose.json", "unet/config.json", "vae/config.json", "image_encoder/config.json",
                    "adapter/config.json", "scheduler/scheduler_config.json"}


def files_of(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def run(args) -> int:
    return converter.main(args)


@pytest.fixture(scope="module")
def converted(release: Path, golden_settings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "model"
    assert run(convert_args(release, out, golden_settings)) == 0
    return out


def test_layout_is_dreampose_model_1(converted: Path) -> None:
    assert files_of(converted) == LAYOUT
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"


@pytest.mark.parametrize("rel", sorted(WEIGHTS))
def test_tensors_equal_the_golden_model(converted: Path, golden_model: Path, rel: str) -> None:
    got = load_file(str(converted / rel))
    want = load_file(str(golden_model / rel))
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        assert got[key].dtype == torch.float32, key
        assert got[key].shape == tensor.shape, key
        assert torch.equal(got[key], tensor.float()), key


def test_settings_equal_the_golden_model(converted: Path, golden_model: Path) -> None:
    # dreampose.json: the fake release came from the golden model and was converted with its settings.
    assert read_json(converted / "dreampose.json") == read_json(golden_model / "dreampose.json")
    # in_channels was 4 in checkpoint-E/unet/config.json (SD's) and must come back as conv_in's 14.
    assert read_json(converted / "unet/config.json") == read_json(golden_model / "unet/config.json")
    assert read_json(converted / "adapter/config.json") == read_json(golden_model / "adapter/config.json")
    assert (read_json(converted / "scheduler/scheduler_config.json")
            == read_json(golden_model / "scheduler/scheduler_config.json"))
    vae = read_json(golden_model / "vae/config.json")
    vae.pop("scaling_factor")  # the fake release's config lacks it, like pre-0.13 diffusers configs
    assert read_json(converted / "vae/config.json") == vae
    clip = read_json(converted / "image_encoder/config.json")
    golden_clip = read_json(golden_model / "image_encoder/config.json")
    golden_clip.pop("transformers_version")
    assert {k: clip.get(k) for k in golden_clip} == golden_clip


def test_model_id_follows_the_spec(golden_model: Path) -> None:
    # The golden manifest lists every model file's sha256; the id is built from those (model-format.md).
    manifest = read_json(golden_model.parent / "manifest.json")
    files = manifest["model"]["files"]
    lines = "".join(f"{rel}\0{files[rel]['sha256']}\n" for rel in sorted(files, key=str.encode))
    assert converter.model_id(golden_model) == hashlib.sha256(lines.encode()).hexdigest()


def test_model_id_is_stable_across_conversions(converted: Path, release: Path, golden_settings, tmp_path) -> None:
    again = tmp_path / "again"
    assert run(convert_args(release, again, golden_settings)) == 0
    assert converter.model_id(again) == converter.model_id(converted)
    # The name is part of dreampose.json, so a different name is a different model.
    renamed = tmp_path / "renamed"
    assert run(convert_args(release, renamed, golden_settings, "--name", "other")) == 0
    assert converter.model_id(renamed) != converter.model_id(converted)


def test_float16_output(release: Path, golden_model: Path, golden_settings, tmp_path) -> None:
    out = tmp_path / "fp16"
    assert run(convert_args(release, out, golden_settings, "--dtype", "float16")) == 0
    for rel in WEIGHTS:
        want = load_file(str(golden_model / rel))
        with safe_open(str(out / rel), "pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                assert tensor.dtype == torch.float16, (rel, key)
                assert torch.equal(tensor, want[key].half()), (rel, key)
    assert read_json(out / "image_encoder/config.json")["dtype"] == "float16"


def test_keep_dtype_keeps_float16_inputs(golden_model: Path, golden_settings, tmp_path) -> None:
    release = tmp_path / "release16"
    fakes.make(golden_model, release, EPOCH, VAE_EPOCH, "float16")
    out = tmp_path / "kept"
    assert run(convert_args(release, out, golden_settings, "--dtype", "keep")) == 0
    unet = load_file(str(out / "unet/diffusion_pytorch_model.safetensors"))
    want = load_file(str(golden_model / "unet/diffusion_pytorch_model.safetensors"))
    assert all(t.dtype == torch.float16 for t in unet.values())
    assert all(torch.equal(unet[k], v.half()) for k, v in want.items())


def test_vae_from_the_checkpoint_folder_and_ddim(release: Path, golden_model: Path, golden_settings,
                                                 tmp_path) -> None:
    # Without --vae the weights come from checkpoint-E/vae/ (diffusers names there).
    folder = tmp_path / "release"
    folder.mkdir()
    for item in release.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / f"checkpoint-{EPOCH}").unlink()
    checkpoint = folder / f"checkpoint-{EPOCH}"
    for sub in ("unet", "vae", "scheduler"):
        (checkpoint / sub).mkdir(parents=True)
    for rel in ("unet/config.json", "vae/config.json"):
        (checkpoint / rel).write_bytes((release / f"checkpoint-{EPOCH}" / rel).read_bytes())
    (checkpoint / "vae/diffusion_pytorch_model.safetensors").write_bytes(
        (golden_model / "vae/diffusion_pytorch_model.safetensors").read_bytes())
    ddim = read_json(release / f"checkpoint-{EPOCH}/scheduler/scheduler_config.json")
    ddim["_class_name"] = "DDIMScheduler"
    (checkpoint / "scheduler/scheduler_config.json").write_text(json.dumps(ddim))
    args = [a for a in convert_args(folder, tmp_path / "out", golden_settings)]
    vae_at = args.index("--vae")
    del args[vae_at:vae_at + 2]
    assert run(args) == 0
    got = load_file(str(tmp_path / "out/vae/diffusion_pytorch_model.safetensors"))
    want = load_file(str(golden_model / "vae/diffusion_pytorch_model.safetensors"))
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], v) for k, v in want.items())
    assert read_json(tmp_path / "out/dreampose.json")["defaults"]["sampler"] == "ddim"


def test_command_line(release: Path, golden_settings, tmp_path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, str(SCRIPTS / "convert_dreampose_checkpoint.py"),
                             *convert_args(release, out, golden_settings)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert f"model id: {converter.model_id(out)}" in result.stdout
