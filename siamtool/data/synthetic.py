"""LaSOT-layout sequences rendered in code: test data for every command, and training data from photos.

Each sequence shows a target moving over a background under a drifting camera, changing scale, passing
distractors of similar appearance, leaving the frame (out_of_view) and passing behind an occluder
(full_occlusion). The ground truth is exact because the frames are rendered from it.

Textures are random noise by default (fast, for tests). Given real photographs (`textures`), targets,
distractors and backgrounds are cut from them: "still-image pairs with strong augmentation", the way
DaSiamRPN and SiamRPN++ use COCO/DET, but in LaSOT layout so that prepare, train and eval use them
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

_OBJ = 64  # side of the object texture before it is warped into its box


def _noise_texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random colour texture: noise upsampled, so features exist at several scales."""
    small = rng.integers(0, 256, size=(max(2, h // cells), max(2, w // cells), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _patch(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A random rectangle of a photo (aspect 0.5-2, 15-50% of the short side), resized to _OBJ x _OBJ."""
    h, w = photo.shape[:2]
    side = rng.uniform(0.15, 0.5) * min(h, w)
    aspect = np.exp(rng.uniform(-0.7, 0.7))
    pw, ph = min(w - 1, side * np.sqrt(aspect)), min(h - 1, side / np.sqrt(aspect))
    x, y = rng.uniform(0, w - pw), rng.uniform(0, h - ph)
    p = photo[int(y): int(y + ph) + 1, int(x): int(x + pw) + 1]
    return cv2.resize(p, (_OBJ, _OBJ), interpolation=cv2.INTER_AREA)


def _object(rng: np.random.Generator, textures: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """An object texture and its alpha mask (rectangle or feathered ellipse: objects are not all boxes)."""
    if textures:
        tex = _patch(rng, textures[rng.integers(len(textures))])
    else:
        tex = _noise_texture(rng, _OBJ, _OBJ, 4)
        cv2.rectangle(tex, (0, 0), (_OBJ - 1, _OBJ - 1), tuple(int(c) for c in rng.integers(0, 256, 3)), 4)
    mask = np.full((_OBJ, _OBJ), 255, np.uint8)
    if textures and rng.random() < 0.5:
        mask[:] = 0
        cv2.ellipse(mask, (_OBJ // 2, _OBJ // 2), (_OBJ // 2 - 1, _OBJ // 2 - 1), 0, 0, 360, 255, -1)
    return tex, mask


def _path(rng: np.random.Generator, t: np.ndarray, centre: float, amplitude: float) -> np.ndarray:
    """A smooth random 1-D trajectory: a sum of two sinusoids of random frequency and phase."""
    out = np.full_like(t, centre)
    for _ in range(2):
        out += amplitude * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6.3))
    return out


def _paste(frame: np.ndarray, tex: np.ndarray, mask: np.ndarray, box: np.ndarray) -> None:
    """Warp an object texture into a 0-based x,y,w,h box (same pixel-centre convention as geometry.crop)."""
    x, y, w, h = box
    height, width = frame.shape[:2]
    m = np.array([[w / _OBJ, 0, x + 0.5 * w / _OBJ - 0.5], [0, h / _OBJ, y + 0.5 * h / _OBJ - 0.5]])
    warped = cv2.warpAffine(tex, m, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, m, (width, height), flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255
    frame[:] = (frame * (1 - alpha) + warped * alpha).astype(np.uint8)


def _camera(rng: np.random.Generator, t: np.ndarray, size: tuple[int, int],
            backgrounds: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A background larger than the frame and the camera's path over it (the frame's top-left corner per
    frame): camera motion, so that a still target still moves in the frame."""
    width, height = size
    if backgrounds:
        photo = backgrounds[rng.integers(len(backgrounds))]
        zoom = rng.uniform(1.1, 1.6)
        bg_src = cv2.resize(photo, (int(width * zoom), int(height * zoom)), interpolation=cv2.INTER_AREA)
    else:
        bg_src = _noise_texture(rng, int(height * 1.3), int(width * 1.3), 8)
    slack_x, slack_y = bg_src.shape[1] - width, bg_src.shape[0] - height
    cam_x = np.clip(_path(rng, t, slack_x / 2, slack_x / 3), 0, slack_x)
    cam_y = np.clip(_path(rng, t, slack_y / 2, slack_y / 3), 0, slack_y)
    return bg_src, cam_x, cam_y


def render_sequence(
    rng: np.random.Generator,
    n_frames: int,
    size: tuple[int, int],
    textures: Sequence[np.ndarray] | None = None,
    backgrounds: Sequence[np.ndarray] | None = None,
    sink: Callable[[np.ndarray], None] | None = None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Frames (BGR), 0-based continuous GT boxes, full_occlusion flags, out_of_view flags.

    The target, distractors and occluder are cut from `textures`; the background is one of `backgrounds`
    (default: `textures` too). Separate pools keep a target from being cut out of its own background,
    which with a single photo makes a camouflaged target no tracker can see. `sink`: each frame goes to it
    as it is rendered and none is kept (the list comes back empty), so a long clip needs no memory for its
    frames (the demo's `--frames 100000` took 4.8 GB).
    """
    width, height = size
    t = np.linspace(0, 1, n_frames)
    bg_src, cam_x, cam_y = _camera(rng, t, size, backgrounds or textures)

    tex, mask = _object(rng, textures)
    w0 = rng.uniform(0.12, 0.3) * width
    h0 = float(np.clip(w0 * np.exp(rng.uniform(-0.6, 0.6)), 8, 0.6 * height))
    cx = _path(rng, t, 0.5 * width, 0.25 * width)
    cy = _path(rng, t, 0.5 * height, 0.2 * height)
    # Leave the frame on the right and come back: out_of_view frames.
    exit_at = rng.uniform(0.6, 0.8)
    cx = cx + width * 1.5 * np.clip(1 - np.abs(t - exit_at) / 0.08, 0, 1)
    scale = np.exp(_path(rng, t, 0.0, 0.3))
    # Distractors: other objects cut from the same texture pool, on their own paths.
    distractors = [(*_object(rng, textures), _path(rng, t, rng.uniform(0.2, 0.8) * width, 0.3 * width),
                    _path(rng, t, rng.uniform(0.2, 0.8) * height, 0.3 * height)) for _ in range(rng.integers(0, 3))]
    occluder = _noise_texture(rng, _OBJ, _OBJ, 8) if not textures else _patch(rng, textures[rng.integers(len(textures))])
    occ_start = int(rng.uniform(0.3, 0.5) * n_frames)
    occ_len = max(1, n_frames // 12)
    gain = _path(rng, t, 1.0, 0.15)

    frames, boxes = [], []
    fo = np.zeros(n_frames, dtype=bool)
    oov = np.zeros(n_frames, dtype=bool)
    for i in range(n_frames):
        frame = bg_src[int(cam_y[i]): int(cam_y[i]) + height, int(cam_x[i]): int(cam_x[i]) + width].copy()
        for dtex, dmask, dx, dy in distractors:
            _paste(frame, dtex, dmask, np.array([dx[i] - w0 / 2, dy[i] - h0 / 2, w0, h0]))
        w, h = w0 * scale[i], h0 * scale[i]
        box = np.array([cx[i] - w / 2, cy[i] - h / 2, w, h])
        _paste(frame, tex, mask, box)
        if occ_start <= i < occ_start + occ_len:
            cover = box + np.array([-6, -6, 12, 12])
            _paste(frame, occluder, np.full((_OBJ, _OBJ), 255, np.uint8), cover)
            fo[i] = True
        if box[0] >= width or box[1] >= height or box[0] + w <= 0 or box[1] + h <= 0:
            oov[i] = True
        frame = np.clip(frame.astype(np.float32) * gain[i], 0, 255).astype(np.uint8)
        boxes.append(box)
        if sink is None:
            frames.append(frame)
        else:
            sink(frame)
    return frames, np.asarray(boxes), fo, oov


def _flags_line(flags: np.ndarray) -> str:
    return ",".join(str(int(f)) for f in flags) + "\n"


def write_sequence(seq: Path, frames: list[np.ndarray], boxes: np.ndarray, fo: np.ndarray, oov: np.ndarray,
                   nlp: str) -> None:
    """Write one sequence in LaSOT layout (1-based GT; absent frames carry 0,0,0,0 as in LaSOT)."""
    (seq / "img").mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(seq / "img" / f"{i + 1:08d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    lines = ["0,0,0,0" if absent else f"{b[0] + 1:.3f},{b[1] + 1:.3f},{b[2]:.3f},{b[3]:.3f}"
             for b, absent in zip(boxes, fo | oov)]
    (seq / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    (seq / "full_occlusion.txt").write_text(_flags_line(fo))
    (seq / "out_of_view.txt").write_text(_flags_line(oov))
    (seq / "nlp.txt").write_text(nlp + "\n")


def make_synthetic_lasot(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    seqs_per_class: int = 2,
    n_frames: int = 40,
    size: tuple[int, int] = (192, 144),
    seed: int = 0,
    textures: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write a LaSOT-layout dataset under `root` and return it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        for k in range(1, seqs_per_class + 1):
            frames, boxes, fo, oov = render_sequence(rng, n_frames, size, textures)
            write_sequence(root / cls / f"{cls}-{k}", frames, boxes, fo, oov, f"a synthetic {cls}")
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
