"""Shared fixtures: the golden model folder and fake DreamPose release files made from it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

SCRIPTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SCRIPTS))

import convert_dreampose_checkpoint as converter  # noqa: E402
import make_fake_checkpoints as fakes  # noqa: E402

# The golden pipeline case (produced by diffusers/transformers, see ../shared/golden/README.md).
# DP_GOLDEN_MODEL points the tests at another dreampose-model/1 folder.
GOLDEN_MODEL = Path(os.environ.get("DP_GOLDEN_MODEL", str(fakes.DEFAULT_MODEL)))
EPOCH = 7
VAE_EPOCH = 15


@pytest.fixture(scope="session")
def golden_model() -> Path:
    if not (GOLDEN_MODEL / "dreampose.json").is_file():
        pytest.fail(f"golden model folder {GOLDEN_MODEL} is missing (expected ../shared beside the checkout, "
                    f"or set DP_GOLDEN_MODEL)")
    return GOLDEN_MODEL


@pytest.fixture(scope="session")
def golden_settings(golden_model: Path) -> Dict[str, Any]:
    return json.loads((golden_model / "dreampose.json").read_text())


@pytest.fixture(scope="session")
def release(golden_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake release files (float32) - read-only by convention: tests that damage files make their own."""
    out = tmp_path_factory.mktemp("release")
    fakes.make(golden_model, out, EPOCH, VAE_EPOCH, "float32")
    return out


def convert_args(release: Path, out: Path, settings: Dict[str, Any], *extra: str) -> List[str]:
    """Command-line arguments converting `release` with the golden model's own settings."""
    defaults = settings["defaults"]
    return ["--folder", str(release), "--epoch", str(EPOCH), "--vae", str(release / f"vae_{VAE_EPOCH}.pth"),
            "--clip", str(release / "clip"), "--out", str(out), "--name", settings["name"],
            "--height", str(settings["height"]), "--width", str(settings["width"]),
            "--steps", str(defaults["steps"]), "--image-guidance", str(defaults["image_guidance"]),
            "--pose-guidance", str(defaults["pose_guidance"]), *extra]
