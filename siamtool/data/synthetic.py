"""A tiny LaSOT-layout dataset made in code, for tests of every command.

Each sequence shows a textured object moving over a textured background while it changes scale,
leaves the frame (out_of_view) and passes behind an occluder (full_occlusion). The ground truth is
exact because the frames are rendered from it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random colour texture: blurred noise upsampled, so features exist at several scales."""
    small = rng.integers(0, 256, size=(max(2, h // cells), max(2, w // cells), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def render_sequence(
    rng: np.random.Generator, n_frames: int, size: tuple[int, int]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Frames (BGR), 0-based continuous GT boxes, full_occlusion flags, out_of_view flags."""
    width, height = size
    bg = _texture(rng, height, width, 8)
    obj_w0 = rng.uniform(0.15, 0.3) * width
    obj_h0 = obj_w0 * rng.uniform(0.6, 1.6)
    obj = _texture(rng, 64, 64, 4)
    cv2.rectangle(obj, (0, 0), (63, 63), tuple(int(c) for c in rng.integers(0, 256, 3)), 4)
    # Trajectory: a smooth path that exits the frame on the right near the end of the sequence.
    t = np.linspace(0, 1, n_frames)
    cx = width * (0.3 + 0.25 * np.sin(2 * np.pi * t) + np.where(t > 0.8, (t - 0.8) * 6.0, 0.0))
    cy = height * (0.5 + 0.2 * np.cos(2 * np.pi * t * 1.3))
    scale = 1.0 + 0.4 * np.sin(np.pi * t)
    occ_start = int(0.45 * n_frames)
    occ_len = max(1, n_frames // 12)
    frames, boxes = [], []
    fo = np.zeros(n_frames, dtype=bool)
    oov = np.zeros(n_frames, dtype=bool)
    for i in range(n_frames):
        w, h = obj_w0 * scale[i], obj_h0 * scale[i]
        x, y = cx[i] - w / 2, cy[i] - h / 2
        frame = bg.copy()
        # Affine-warp the object texture into its box (same pixel-centre convention as geometry.crop).
        m = np.array([[w / 64, 0, x + 0.5 * w / 64 - 0.5], [0, h / 64, y + 0.5 * h / 64 - 0.5]])
        warped = cv2.warpAffine(obj, m, (width, height), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.full((64, 64), 255, np.uint8), m, (width, height))
        frame[mask > 127] = warped[mask > 127]
        if occ_start <= i < occ_start + occ_len:
            # An occluder covering the whole object.
            x0, y0 = int(np.floor(x)) - 4, int(np.floor(y)) - 4
            cv2.rectangle(frame, (x0, y0), (int(np.ceil(x + w)) + 4, int(np.ceil(y + h)) + 4), (40, 40, 40), -1)
            fo[i] = True
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            oov[i] = True
        boxes.append([x, y, w, h])
        frames.append(frame)
    return frames, np.asarray(boxes), fo, oov


def _flags_line(flags: np.ndarray) -> str:
    return ",".join(str(int(f)) for f in flags) + "\n"


def make_synthetic_lasot(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    seqs_per_class: int = 2,
    n_frames: int = 40,
    size: tuple[int, int] = (192, 144),
    seed: int = 0,
) -> Path:
    """Write a LaSOT-layout dataset under `root` and return it. Absent frames get GT 0,0,0,0 as in LaSOT."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        for k in range(1, seqs_per_class + 1):
            seq = root / cls / f"{cls}-{k}"
            (seq / "img").mkdir(parents=True, exist_ok=True)
            frames, boxes, fo, oov = render_sequence(rng, n_frames, size)
            for i, frame in enumerate(frames):
                cv2.imwrite(str(seq / "img" / f"{i + 1:08d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
            lines = []
            for b, absent in zip(boxes, fo | oov):
                # LaSOT files are 1-based; absent frames carry no box.
                lines.append("0,0,0,0" if absent else f"{b[0] + 1:.3f},{b[1] + 1:.3f},{b[2]:.3f},{b[3]:.3f}")
            (seq / "groundtruth.txt").write_text("\n".join(lines) + "\n")
            (seq / "full_occlusion.txt").write_text(_flags_line(fo))
            (seq / "out_of_view.txt").write_text(_flags_line(oov))
            (seq / "nlp.txt").write_text(f"a textured synthetic {cls}\n")
    return root


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """Write frames as an MJPG .avi (playable everywhere OpenCV is, no codec downloads)."""
    path = Path(path)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path
