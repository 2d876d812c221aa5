#!/usr/bin/env python3
"""A synthetic subject world for the dp-farm demo model: a 2-D articulated person posed by joint angles.

For each pose it renders the RGB frame (anti-aliased, 3x3 supersampling) over a fixed background and the
matching DensePose-style UV map: float32 (2, H, W), per body part a local (u, v) over the part's surface
(u along the part, v across it, both in 0.05..0.95), exactly 0 on the background - the kind of input
DreamPose takes.

    python3 Scripts/demo/synth.py --seed N --frames K --motion dance --out DIR

writes DIR/poses/frame_<n>_densepose.npy (float32, (2, H, W), the name the engine reads),
DIR/truth/frame_<nnnnn>.png (the frame the model should render for pose n) and DIR/subject.png (the subject
in its rest pose). Motions: `dance` (smooth seeded procedural dance: every joint a sum of two sinusoids),
`random` (random key poses eased into each other; what train.py trains on) and `rest`.
Only numpy and Pillow are needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

HEIGHT = 128
WIDTH = 128
SUPERSAMPLE = 3

# Joint vector: name, low, high (radians, except dx / dy in pixels). Limb angles: 0 = hanging down,
# positive = away from the body's centre line (arms and legs), elbow/knee bend relative to the parent.
JOINTS: List[Tuple[str, float, float]] = [
    ("dx", -16.0, 16.0),          # body (pelvis) offset, pixels
    ("dy", -3.0, 4.0),
    ("lean", -0.22, 0.22),        # torso lean
    ("head", -0.3, 0.3),          # head tilt relative to the torso
    ("arm_l", -0.25, 2.4),        # upper arm, image-left side
    ("elbow_l", -0.2, 2.0),
    ("arm_r", -0.25, 2.4),
    ("elbow_r", -0.2, 2.0),
    ("leg_l", -0.15, 0.7),        # upper leg
    ("knee_l", 0.0, 1.2),
    ("leg_r", -0.15, 0.7),
    ("knee_r", 0.0, 1.2),
]
JOINT_INDEX = {name: i for i, (name, _, _) in enumerate(JOINTS)}
LOW = np.array([j[1] for j in JOINTS])
HIGH = np.array([j[2] for j in JOINTS])

REST_POSE = np.array([0.0, 0.0, 0.0, 0.0, 0.25, 0.15, 0.25, 0.15, 0.1, 0.05, 0.1, 0.05])


# ----------------------------------------------------------------------------------------------------------
# Background (fixed): a wall with a window (pure white pane, black frame: the frame spans 0..255, so the
# renderer's min-max stretch is close to the identity), a picture, a black baseboard and a wooden floor.

def _background() -> np.ndarray:
    h, w = HEIGHT, WIDTH
    y = (np.arange(h)[:, None] + 0.5) * np.ones((1, w))
    x = np.ones((h, 1)) * (np.arange(w)[None, :] + 0.5)
    img = np.zeros((h, w, 3))
    t = y / h
    for c, (a, b) in enumerate([(170, 200), (190, 212), (212, 222)]):
        img[..., c] = a + (b - a) * t
    # window: black frame, white panes, black cross bar
    win = (x >= 8) & (x < 38) & (y >= 8) & (y < 44)
    img[win] = (0, 0, 0)
    pane = (x >= 10) & (x < 36) & (y >= 10) & (y < 42) & ~((x >= 22) & (x < 24)) & ~((y >= 25) & (y < 27))
    img[pane] = (255, 255, 255)
    # picture: dark green with a yellow sun
    pic = (x >= 96) & (x < 120) & (y >= 16) & (y < 36)
    img[pic] = (40, 90, 60)
    sun = (x - 112) ** 2 + (y - 23) ** 2 < 16
    img[sun & pic] = (240, 200, 60)
    # baseboard and floor planks
    img[(y >= 102) & (y < 106)] = (0, 0, 0)
    floor = y >= 106
    plank = ((y - 106) // 7) % 2 == 0
    img[floor & plank] = (160, 112, 72)
    img[floor & ~plank] = (138, 94, 60)
    return img


BACKGROUND = np.clip(np.round(_background()), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Body parts. Each part gives, for points (px, py), a coverage mask, local coordinates (s along, t across,
# both in 0..1) and a colour for those coordinates.

Colour = Tuple[float, float, float]


def _mix(mask: np.ndarray, a: Colour, b: Colour) -> np.ndarray:
    a_ = np.array(a, dtype=np.float64)
    b_ = np.array(b, dtype=np.float64)
    return np.where(mask[..., None], b_, a_)


@dataclass
class Part:
    name: str
    kind: str                      # "limb" (tapered capsule A->B) or "ellipse"
    a: np.ndarray                  # limb: start joint; ellipse: centre
    b: np.ndarray                  # limb: end joint; ellipse: (rx, ry)
    width: Tuple[float, float]     # limb: full width at A and at B; ellipse: unused
    angle: float                   # ellipse rotation (radians)
    texture: Callable[[np.ndarray, np.ndarray], np.ndarray]
    caps: bool = True              # limb: round caps at both ends (the torso has flat ends)

    def bbox(self) -> Tuple[float, float, float, float]:
        if self.kind == "limb":
            r = max(self.width) / 2 + 1
            return (min(self.a[0], self.b[0]) - r, min(self.a[1], self.b[1]) - r,
                    max(self.a[0], self.b[0]) + r, max(self.a[1], self.b[1]) + r)
        r = max(self.b) + 1
        return (self.a[0] - r, self.a[1] - r, self.a[0] + r, self.a[1] + r)

    def local(self, px: np.ndarray, py: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside, s, t): s along the part 0..1, t across 0..1."""
        if self.kind == "limb":
            d = self.b - self.a
            length = float(np.hypot(d[0], d[1])) or 1e-6
            ux, uy = d[0] / length, d[1] / length
            rx, ry = px - self.a[0], py - self.a[1]
            along = (rx * ux + ry * uy) / length
            across = -rx * uy + ry * ux
            sc = np.clip(along, 0.0, 1.0)
            half = (self.width[0] + (self.width[1] - self.width[0]) * sc) / 2
            # distance to the axis segment: round caps at both ends
            cx = self.a[0] + sc * d[0]
            cy = self.a[1] + sc * d[1]
            if self.caps:
                inside = np.hypot(px - cx, py - cy) <= half
            else:
                inside = (along >= 0) & (along <= 1) & (np.abs(across) <= half)
            t = np.clip(across / (2 * half) + 0.5, 0.0, 1.0)
            return inside, sc, t
        rx_, ry_ = self.b
        c, s = math.cos(self.angle), math.sin(self.angle)
        qx, qy = px - self.a[0], py - self.a[1]
        lx = (qx * c + qy * s) / rx_
        ly = (-qx * s + qy * c) / ry_
        inside = lx * lx + ly * ly <= 1.0
        return inside, np.clip((ly + 1) / 2, 0, 1), np.clip((lx + 1) / 2, 0, 1)


def _flat(col: Colour) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda s, t: _mix(np.zeros_like(s, dtype=bool), col, col)


def _shirt(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    stripe = (((s + 0.12) * 3.6) % 1.0) < 0.36
    out = _mix(stripe & (s < 0.84), (196, 36, 48), (245, 236, 220))
    out[s >= 0.84] = (70, 46, 30)                                     # belt
    out[(s >= 0.86) & (s < 0.96) & (np.abs(t - 0.5) < 0.07)] = (220, 190, 80)   # buckle
    return out


def _sleeve(col: Colour) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda s, t: _mix(s > 0.78, col, (245, 236, 220))


def _forearm(watch: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    skin = (232, 188, 156)
    if not watch:
        return lambda s, t: _mix((s > 0.1) & (s < 0.16), skin, (218, 170, 140))
    return lambda s, t: _mix(s > 0.8, skin, (30, 50, 120))


def _jeans(col: Colour, seam: Colour) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda s, t: _mix(np.abs(t - 0.5) < 0.12, col, seam)


def _shin(col: Colour, cuff: Colour) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda s, t: _mix(s > 0.8, col, cuff)


def _shoe(col: Colour) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda s, t: _mix(s > 0.72, col, (250, 250, 250))


def _head(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    # s: top (0) to chin (1); t: left (0) to right (1)
    out = _mix(np.zeros_like(s, dtype=bool), (238, 198, 168), (238, 198, 168))
    hair = (s < 0.34 + 0.06 * np.cos((t - 0.5) * 12)) | ((s < 0.55) & (np.abs(t - 0.5) > 0.42))
    out[hair] = (74, 42, 22)
    for ex in (0.31, 0.69):
        eye = ((t - ex) / 0.085) ** 2 + ((s - 0.52) / 0.075) ** 2 <= 1
        out[eye] = (20, 22, 40)
    mouth = ((t - 0.5) / 0.2) ** 2 + ((s - 0.77) / 0.05) ** 2 <= 1
    out[mouth] = (176, 40, 60)
    cheeks = (((t - 0.26) / 0.08) ** 2 + ((s - 0.66) / 0.06) ** 2 <= 1) | \
             (((t - 0.74) / 0.08) ** 2 + ((s - 0.66) / 0.06) ** 2 <= 1)
    out[cheeks] = (236, 160, 150)
    return out


def _rot(v: Tuple[float, float], ang: float) -> np.ndarray:
    c, s = math.cos(ang), math.sin(ang)
    return np.array([v[0] * c - v[1] * s, v[0] * s + v[1] * c])


def body_parts(q: np.ndarray) -> List[Part]:
    """The parts of pose `q` (see JOINTS), back to front."""
    j = {name: float(q[i]) for i, (name, _, _) in enumerate(JOINTS)}
    pelvis = np.array([WIDTH / 2 + j["dx"], 70.0 + j["dy"]])
    lean = j["lean"]
    up = _rot((0.0, -1.0), lean)
    right = _rot((1.0, 0.0), lean)
    neck = pelvis + 32 * up
    parts: List[Part] = []

    def limb(name, a, b, w, tex, caps=True):
        parts.append(Part(name, "limb", a, b, w, 0.0, tex, caps))

    def direction(angle: float, side: float) -> np.ndarray:
        # angle 0 = down; positive = outward on `side` (-1 image left, +1 image right)
        return np.array([side * math.sin(angle), math.cos(angle)])

    # legs (behind the torso)
    for side, tag, upper, lower, shoe in ((-1, "l", (52, 82, 160), (36, 62, 132), (34, 32, 36)),
                                          (1, "r", (44, 112, 150), (30, 86, 120), (96, 48, 26))):
        hip = pelvis + np.array([side * 7.0, 0.0])
        a_up = j["leg_" + tag]
        knee = hip + 24 * direction(a_up, side)
        a_low = a_up - j["knee_" + tag]
        ankle = knee + 22 * direction(a_low, side)
        limb("upper_leg_" + tag, hip, knee, (13.0, 11.0), _jeans(upper, (150, 170, 210)))
        limb("lower_leg_" + tag, knee, ankle, (11.0, 9.0), _shin(lower, (210, 200, 170)))
        toe = ankle + np.array([side * 7.0, 3.0])
        limb("shoe_" + tag, ankle + np.array([-side * 2.0, 1.5]), toe, (9.0, 8.0), _shoe(shoe))
    # torso (neck at s=0, hips at s=1), then neck and head
    limb("torso", neck + 2 * up, pelvis - 6 * up, (28.0, 24.0), _shirt, caps=False)
    limb("neck", neck, neck + 7 * up, (8.0, 8.0), _flat((224, 182, 152)))
    head_angle = lean + j["head"]
    head_up = _rot((0.0, -1.0), head_angle)
    centre = neck + 4 * up + 12 * head_up
    parts.append(Part("head", "ellipse", centre, np.array([10.0, 12.5]), (0.0, 0.0), head_angle, _head))
    # arms (in front)
    for side, tag, sleeve, watch in ((-1, "l", (206, 58, 60), True), (1, "r", (226, 120, 44), False)):
        shoulder = neck + side * 11.5 * right - 3.5 * up
        a_up = j["arm_" + tag]
        d_up = _rot(tuple(direction(a_up, side)), lean)
        elbow = shoulder + 21 * d_up
        d_low = _rot(tuple(direction(a_up + j["elbow_" + tag], side)), lean)
        wrist = elbow + 19 * d_low
        limb("upper_arm_" + tag, shoulder, elbow, (10.0, 9.0), _sleeve(sleeve))
        limb("lower_arm_" + tag, elbow, wrist, (8.5, 7.5), _forearm(watch))
        hand = wrist + 3.5 * d_low
        parts.append(Part("hand_" + tag, "ellipse", hand, np.array([5.0, 5.5]), (0.0, 0.0),
                          math.atan2(-d_low[0], d_low[1]), _flat((214, 164, 134))))
    return parts


def render(q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Frame (H, W, 3) uint8 and UV map (2, H, W) float32 of pose q."""
    S = SUPERSAMPLE
    hs, ws = HEIGHT * S, WIDTH * S
    colour = np.repeat(np.repeat(BACKGROUND.astype(np.float64), S, axis=0), S, axis=1)
    uv = np.zeros((2, HEIGHT, WIDTH), dtype=np.float32)
    for part in body_parts(q):
        x0, y0, x1, y1 = part.bbox()
        i0, i1 = max(int(math.floor(y0 * S)), 0), min(int(math.ceil(y1 * S)) + 1, hs)
        j0, j1 = max(int(math.floor(x0 * S)), 0), min(int(math.ceil(x1 * S)) + 1, ws)
        if i0 >= i1 or j0 >= j1:
            continue
        py = (np.arange(i0, i1)[:, None] + 0.5) / S
        px = (np.arange(j0, j1)[None, :] + 0.5) / S
        px, py = np.broadcast_arrays(px, py)
        inside, s, t = part.local(px, py)
        if not inside.any():
            continue
        col = part.texture(s, t)
        region = colour[i0:i1, j0:j1]
        region[inside] = col[inside]
        # UV at pixel centres (the middle subsample of each S x S block)
        ci = np.arange(i0, i1)
        cj = np.arange(j0, j1)
        rows = np.nonzero(ci % S == S // 2)[0]
        cols = np.nonzero(cj % S == S // 2)[0]
        if rows.size and cols.size:
            sub_in = inside[np.ix_(rows, cols)]
            pi = ci[rows] // S
            pj = cj[cols] // S
            uu = (0.05 + 0.9 * s[np.ix_(rows, cols)]).astype(np.float32)
            vv = (0.05 + 0.9 * t[np.ix_(rows, cols)]).astype(np.float32)
            block_u = uv[0][np.ix_(pi, pj)]
            block_v = uv[1][np.ix_(pi, pj)]
            block_u[sub_in] = uu[sub_in]
            block_v[sub_in] = vv[sub_in]
            uv[0][np.ix_(pi, pj)] = block_u
            uv[1][np.ix_(pi, pj)] = block_v
    frame = colour.reshape(HEIGHT, S, WIDTH, S, 3).mean(axis=(1, 3))
    return np.clip(np.round(frame), 0, 255).astype(np.uint8), uv


# ----------------------------------------------------------------------------------------------------------
# Motions: arrays (frames, len(JOINTS)).

def dance(seed: int, frames: int) -> np.ndarray:
    """A smooth procedural dance: every joint a sum of two sinusoids (periods 18..48 frames), seeded."""
    rng = np.random.default_rng([seed, 0xDA7CE])
    t = np.arange(frames, dtype=np.float64)[:, None]
    centre = (LOW + HIGH) / 2
    half = (HIGH - LOW) / 2
    p1 = rng.uniform(18, 48, size=len(JOINTS))
    p2 = rng.uniform(10, 24, size=len(JOINTS))
    ph1 = rng.uniform(0, 2 * math.pi, size=len(JOINTS))
    ph2 = rng.uniform(0, 2 * math.pi, size=len(JOINTS))
    a1 = rng.uniform(0.55, 0.85, size=len(JOINTS))
    a2 = rng.uniform(0.05, 0.15, size=len(JOINTS))
    off = rng.uniform(-0.15, 0.15, size=len(JOINTS))
    wave = off + a1 * np.sin(2 * math.pi * t / p1 + ph1) + a2 * np.sin(2 * math.pi * t / p2 + ph2)
    return centre + half * np.clip(wave, -1, 1)


def random_motion(seed: int, frames: int) -> np.ndarray:
    """Random key poses (uniform over every joint's range, one every 5..10 frames) eased into each other
    with a cosine: what train.py trains on."""
    rng = np.random.default_rng([seed, 0x7A1])
    keys = [rng.uniform(LOW, HIGH)]
    times = [0]
    while times[-1] < frames:
        times.append(times[-1] + int(rng.integers(5, 11)))
        keys.append(rng.uniform(LOW, HIGH))
    out = np.zeros((frames, len(JOINTS)))
    k = 0
    for n in range(frames):
        while times[k + 1] <= n:
            k += 1
        a = (n - times[k]) / (times[k + 1] - times[k])
        w = (1 - math.cos(math.pi * a)) / 2
        out[n] = keys[k] * (1 - w) + keys[k + 1] * w
    return out


MOTIONS = {"dance": dance, "random": random_motion,
           "rest": lambda seed, frames: np.tile(REST_POSE, (frames, 1))}


# ----------------------------------------------------------------------------------------------------------
# Files

def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_png(img: np.ndarray, path: Path) -> None:
    from PIL import Image
    _atomic_write(path, lambda tmp: Image.fromarray(img, "RGB").save(tmp, format="PNG"))


def save_npy(arr: np.ndarray, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr))
    _atomic_write(path, write)


def write_case(out: Path, seed: int, frames: int, motion: str) -> None:
    if motion not in MOTIONS:
        raise SystemExit(f"synth.py: unknown motion {motion!r} (expected one of {sorted(MOTIONS)})")
    if frames < 1:
        raise SystemExit(f"synth.py: --frames must be >= 1, got {frames}")
    qs = MOTIONS[motion](seed, frames)
    rest, _ = render(REST_POSE)
    save_png(rest, out / "subject.png")
    for n, q in enumerate(qs):
        img, uv = render(q)
        save_npy(uv, out / "poses" / f"frame_{n}_densepose.npy")
        save_png(img, out / "truth" / f"frame_{n:05d}.png")
    meta = {"generator": "Scripts/demo/synth.py", "seed": seed, "frames": frames, "motion": motion,
            "height": HEIGHT, "width": WIDTH, "joints": [j[0] for j in JOINTS]}
    _atomic_write(out / "case.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Render a synthetic DreamPose case: poses, truth frames, subject.")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--motion", default="dance", choices=sorted(MOTIONS))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    write_case(args.out, args.seed, args.frames, args.motion)
    print(f"synth.py: wrote {args.frames} {args.motion} frames (seed {args.seed}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
