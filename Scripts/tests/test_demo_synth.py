"""Scripts/demo/synth.py: the synthetic subject world the demo model is trained and measured on."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
import synth  # noqa: E402


def test_render_shapes_and_background():
    img, uv = synth.render(synth.REST_POSE)
    assert img.shape == (synth.HEIGHT, synth.WIDTH, 3) and img.dtype == np.uint8
    assert uv.shape == (2, synth.HEIGHT, synth.WIDTH) and uv.dtype == np.float32
    body = uv[0] > 0
    # background: UV exactly 0 and the fixed background pixels; body: UV inside (0.05, 0.95)
    assert np.all(uv[:, ~body] == 0)
    assert uv[:, body].min() >= 0.05 - 1e-6 and uv[:, body].max() <= 0.95 + 1e-6
    assert np.array_equal(img[0, 0], synth.BACKGROUND[0, 0])
    assert 0.1 < body.mean() < 0.4
    # the frame spans 0..255 (the engine's min-max stretch is then close to the identity)
    assert img.min() == 0 and img.max() == 255


def test_motions_are_seeded_and_within_joint_ranges():
    for motion in ("dance", "random"):
        a = synth.MOTIONS[motion](3, 40)
        b = synth.MOTIONS[motion](3, 40)
        c = synth.MOTIONS[motion](4, 40)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert np.all(a >= synth.LOW - 1e-9) and np.all(a <= synth.HIGH + 1e-9)
    d = synth.dance(3, 40)
    assert np.abs(np.diff(d, axis=0)).max() < 0.5 * (synth.HIGH - synth.LOW).max()   # smooth


def test_pose_moves_the_figure():
    q = synth.REST_POSE.copy()
    _, uv0 = synth.render(q)
    q[synth.JOINT_INDEX["arm_l"]] = 2.0
    _, uv1 = synth.render(q)
    assert (uv0[0] > 0).sum() > 0 and np.mean((uv0[0] > 0) != (uv1[0] > 0)) > 0.01


def test_write_case_layout(tmp_path: Path):
    pytest.importorskip("PIL")
    synth.main(["--seed", "5", "--frames", "3", "--motion", "dance", "--out", str(tmp_path)])
    for n in range(3):
        npy = tmp_path / "poses" / f"frame_{n}_densepose.npy"
        arr = np.load(npy)
        assert arr.shape == (2, synth.HEIGHT, synth.WIDTH) and arr.dtype == np.float32
        raw = npy.read_bytes()
        assert raw[:6] == b"\x93NUMPY" and raw[6] == 1          # format 1.0, what the engine reads
        png = tmp_path / "truth" / f"frame_{n:05d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png.read_bytes()[16:24]) == (synth.WIDTH, synth.HEIGHT)
    assert (tmp_path / "subject.png").is_file()
    assert json.loads((tmp_path / "case.json").read_text())["seed"] == 5
    assert not list(tmp_path.rglob("*.tmp"))


def test_committed_demo_case_is_what_synth_makes(tmp_path: Path):
    """Scripts/demo/case (the held-out dance the demo and the quality test render) is reproducible."""
    pytest.importorskip("PIL")
    committed = Path(__file__).resolve().parents[1] / "demo" / "case"
    meta = json.loads((committed / "case.json").read_text())
    synth.write_case(tmp_path, meta["seed"], 3, meta["motion"])
    for n in range(3):
        assert np.array_equal(np.load(committed / "poses" / f"frame_{n}_densepose.npy"),
                              np.load(tmp_path / "poses" / f"frame_{n}_densepose.npy"))
        from PIL import Image
        assert np.array_equal(np.array(Image.open(committed / "truth" / f"frame_{n:05d}.png")),
                              np.array(Image.open(tmp_path / "truth" / f"frame_{n:05d}.png")))
