#!/usr/bin/env python3
"""Contact sheet of a demo render: the truth row (synth.py) over the rendered row, a few frames side by side.

    python3 Scripts/demo/contact_sheet.py --truth Scripts/demo/case/truth --rendered demo/out \
        --frames 0,3,6,9,12,15,18,21 --out docs/demo_contact_sheet.png

Frames are read as frame_<nnnnn>.png from both folders (what synth.py and dp-coord / dp-worker write).
Needs numpy and Pillow.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--truth", type=Path, required=True)
    p.add_argument("--rendered", type=Path, required=True)
    p.add_argument("--frames", default="0,3,6,9,12,15,18,21", help="comma-separated frame numbers")
    p.add_argument("--gap", type=int, default=2, help="white pixels between tiles")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    frames = [int(x) for x in a.frames.split(",") if x.strip()]
    rows = []
    for folder in (a.truth, a.rendered):
        tiles = []
        for n in frames:
            path = folder / f"frame_{n:05d}.png"
            if not path.exists():
                raise SystemExit(f"contact_sheet.py: {path} does not exist")
            tiles.append(np.array(Image.open(path).convert("RGB")))
        h, w = tiles[0].shape[:2]
        for n, t in zip(frames, tiles):
            if t.shape[:2] != (h, w):
                raise SystemExit(f"contact_sheet.py: {folder}/frame_{n:05d}.png is {t.shape[1]}x{t.shape[0]}, "
                                 f"the first tile {w}x{h}")
        gap = np.full((h, a.gap, 3), 255, np.uint8)
        row = [tiles[0]]
        for t in tiles[1:]:
            row += [gap, t]
        rows.append(np.concatenate(row, 1))
    sheet = np.concatenate([rows[0], np.full((a.gap, rows[0].shape[1], 3), 255, np.uint8), rows[1]], 0)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=a.out.parent, prefix="." + a.out.name, suffix=".tmp")
    os.close(fd)
    try:
        Image.fromarray(sheet).save(tmp, format="PNG", optimize=True)
        os.replace(tmp, a.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"contact_sheet.py: wrote {a.out} ({len(frames)} frames: truth above, rendered below)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
