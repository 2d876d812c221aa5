"""Bad inputs are refused with a message naming the file, the key and expected vs found; nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, List

import pytest
import torch

from conftest import EPOCH, VAE_EPOCH, convert_args, converter


@pytest.fixture()
def damaged(release: Path, tmp_path: Path) -> Path:
    """A private copy of the fake release that a test may damage."""
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    return copy


def edit_pth(path: Path, change: Callable[[dict], None]) -> None:
    state = torch.load(str(path), weights_only=True)
    change(state)
    torch.save(state, path)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def refuse(args: List[str], out: Path, capsys: pytest.CaptureFixture, *fragments: str) -> None:
    assert converter.main(args) == 1
    message = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists(), "a refused conversion must not leave an output folder"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary folder left"


def test_unet_without_pose_channels(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    # A plain SD UNet (conv_in takes 4 channels) is not a DreamPose UNet.
    unet = damaged / f"unet_epoch_{EPOCH}.pth"
    edit_pth(unet, lambda s: s.__setitem__("module.conv_in.weight", s["module.conv_in.weight"][:, :4].clone()))
    c0 = torch.load(str(unet), weights_only=True)["module.conv_in.weight"].shape[0]
    out = tmp_path / "out"
    refuse(convert_args(damaged, out, golden_settings), out, capsys,
           str(unet), "conv_in.weight", f"[{c0}, 4, 3, 3]", f"[{c0}, 14, 3, 3]")


def test_frame_size_that_does_not_fit_the_adapter(release: Path, golden_settings, tmp_path, capsys) -> None:
    height, width = golden_settings["height"] * 2, golden_settings["width"]
    features = (height // 16) * (width // 16)
    args = convert_args(release, tmp_path / "out", golden_settings, "--height", str(height), "--width", str(width))
    refuse(args, tmp_path / "out", capsys, "vae2clip.weight", "vae_features", str(features), f"{height}x{width}")


def test_frame_size_not_a_multiple_of_64(release: Path, golden_settings, tmp_path, capsys) -> None:
    args = convert_args(release, tmp_path / "out", golden_settings, "--height", "100")
    refuse(args, tmp_path / "out", capsys, "multiple of 64")


def test_adapter_missing_and_extra_tensors(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    adapter = damaged / f"adapter_{EPOCH}.pth"
    edit_pth(adapter, lambda s: s.pop("linear1.bias"))
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           str(adapter), "'linear1.bias'")
    edit_pth(adapter, lambda s: s.__setitem__("linear1.bias", torch.zeros(50)))
    edit_pth(adapter, lambda s: s.__setitem__("linear2.weight", torch.zeros(2, 2)))
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           str(adapter), "linear2.weight")


def test_adapter_token_mixer_of_the_wrong_size(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    adapter = damaged / f"adapter_{EPOCH}.pth"
    edit_pth(adapter, lambda s: s.__setitem__("linear1.weight", s["linear1.weight"][:, :-1].clone()))
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           "linear1.weight", "[50, 53]", "[50, 54]")


def test_cross_attention_width_disagrees_with_clip(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    config = damaged / f"checkpoint-{EPOCH}/unet/config.json"
    edit_json(config, lambda c: c.__setitem__("cross_attention_dim", c["cross_attention_dim"] + 8))
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           "attn2.to_k.weight", "cross_attention_dim", str(config))


def test_clip_config_disagrees_with_weights(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    config = damaged / "clip/config.json"
    edit_json(config, lambda c: c["vision_config"].__setitem__("num_hidden_layers", 5))
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           "encoder layers [0, 1]", "0..4", "num_hidden_layers")


def test_vae_with_old_and_new_attention_names(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    vae = damaged / f"vae_{VAE_EPOCH}.pth"

    def both(wrapper: dict) -> None:
        state = wrapper["state_dict"]
        old = next(k for k in state if k.endswith(".attentions.0.query.weight"))
        state[old.replace(".query.", ".to_q.")] = state[old].clone()
    edit_pth(vae, both)
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           str(vae), "query.weight", "to_q.weight", "both present")


def test_truncated_checkpoint(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    unet = damaged / f"unet_epoch_{EPOCH}.pth"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           str(unet), "cannot read")


def test_missing_input_file(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    (damaged / f"adapter_{EPOCH}.pth").unlink()
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           f"adapter_{EPOCH}.pth", "does not exist")


def test_unknown_scheduler(damaged: Path, golden_settings, tmp_path, capsys) -> None:
    config = damaged / f"checkpoint-{EPOCH}/scheduler/scheduler_config.json"
    edit_json(config, lambda c: c.__setitem__("_class_name", "EulerDiscreteScheduler"))
    refuse(convert_args(damaged, tmp_path / "out", golden_settings), tmp_path / "out", capsys,
           str(config), "EulerDiscreteScheduler", "PNDMScheduler")


def test_existing_output_is_kept_unless_overwrite(release: Path, golden_settings, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert converter.main(convert_args(release, out, golden_settings)) == 1
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert converter.main(convert_args(release, out, golden_settings, "--overwrite")) == 0
    assert not (out / "keep.txt").exists() and (out / "dreampose.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "temporary or old folder left behind"
