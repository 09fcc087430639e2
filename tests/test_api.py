"""The Python API: `siamtool.load_tracker` (OpenCV contract, images in any form, the model's own settings,
one-line errors), the tracking settings an export carries in export.json, and `Tracker(backend)`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import siamtool
from siamtool.cli import app
from siamtool.config import Config
from siamtool.data.synthetic import render_sequence, write_video
from siamtool.errors import SiamtoolError
from siamtool.onnx_format import REPORT_FILE, TRACK_KEY
from siamtool.tracking.onnx_backend import OnnxBackend
from siamtool.tracking.tracker import Tracker
from tests.onnx_fixtures import save_tuned

runner = CliRunner()
@pytest.fixture(scope="module")
def tuned_export(tuned_checkpoint, tmp_path_factory) -> Path:
    from siamtool.export.onnx import export_checkpoint

    out = tmp_path_factory.mktemp("tuned-export") / "onnx"
    assert export_checkpoint(tuned_checkpoint, out).passed
    return out


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], np.ndarray]:
    frames, boxes, _, _ = render_sequence(np.random.default_rng(5), 12, (192, 144))
    return frames, boxes


def run(tracker, frames, box) -> np.ndarray:
    assert tracker.init(frames[0], box) is True
    out = []
    for frame in frames[1:]:
        ok, b = tracker.update(frame)
        assert isinstance(ok, bool) and len(b) == 4 and all(isinstance(v, float) for v in b)
        out.append(b)
    return np.array(out)


def test_import_siamtool_stays_cheap():
    code = "import sys, siamtool; assert callable(siamtool.load_tracker); print(sorted({'torch', 'cv2'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_boxes_match_siamtool_track_save_boxes(tuned_checkpoint, tmp_path):
    """The acceptance check in small: the same video through `load_tracker` and through the CLI."""
    frames, gt = render_sequence(np.random.default_rng(3), 20, (192, 144))[:2]
    video = write_video(tmp_path / "clip.avi", frames, fps=15)
    init = ",".join(f"{v:.1f}" for v in gt[0])
    saved = tmp_path / "boxes.txt"
    r = runner.invoke(app, ["--device", "cpu", "track", str(video), "--checkpoint", str(tuned_checkpoint),
                            "--init", init, "--no-show", "--save-boxes", str(saved)])
    assert r.exit_code == 0, r.output
    cli = np.array([[float(v) for v in line.split(",")[:4]] for line in saved.read_text().splitlines()])
    cap, decoded = cv2.VideoCapture(str(video)), []
    while (frame := cap.read()[1]) is not None:
        decoded.append(frame)
    tracker = siamtool.load_tracker(tuned_checkpoint, device="cpu")
    assert type(tracker.backend).__name__ == "OnnxBackend"  # auto on CPU, like the CLI
    api = run(tracker, decoded, [float(v) for v in init.split(",")])
    assert len(cli) == len(decoded) == 20
    np.testing.assert_allclose(api, cli[1:], atol=0.006)  # --save-boxes rounds to 2 decimals
    assert np.ptp(api[:, 0]) > 1.0  # it moved: not a comparison of two constant answers


def test_rgb_pil_grayscale_give_the_bgr_answer(tuned_checkpoint, clip):
    frames, gt = clip
    tracker = siamtool.load_tracker(tuned_checkpoint, device="cpu", runtime="torch")
    bgr = run(tracker, frames, gt[0])
    rgb_frames = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    rgb = run(siamtool.load_tracker(tuned_checkpoint, device="cpu", runtime="torch", color="rgb"), rgb_frames, gt[0])
    pil = run(tracker, [Image.fromarray(f) for f in rgb_frames], gt[0])  # PIL is RGB whatever `color` says
    np.testing.assert_array_equal(rgb, bgr)
    np.testing.assert_array_equal(pil, bgr)
    wrong = run(tracker, rgb_frames, gt[0])  # RGB arrays given as BGR: a different answer
    assert not np.array_equal(wrong, bgr)
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    np.testing.assert_array_equal(run(tracker, grey, gt[0]),
                                  run(tracker, [cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in grey], gt[0]))
    np.testing.assert_array_equal(run(tracker, [Image.fromarray(g) for g in grey], gt[0]),
                                  run(tracker, grey, gt[0]))


def test_model_settings_with_overrides_on_top(tuned_checkpoint):
    tracker = siamtool.load_tracker(tuned_checkpoint, device=__import__("torch").device("cpu"), runtime="torch",
                                    window_influence=0.2)
    t = tracker.cfg.track
    assert (t.window_influence, t.lost_threshold, t.lost_ratio, t.scale) == (0.2, 0.1, 0.3, "head")
    assert tracker.tracker.cfg.track.backend == "torch"


@pytest.mark.parametrize("call, message", [
    (dict(device="tpu"), "device='tpu': expected auto, cpu"),
    (dict(windw_influence=0.2), "unknown key 'track.windw_influence'; did you mean 'track.window_influence'"),
    (dict(window_influence="high"), "track.window_influence"),
    (dict(color="hsv"), "color='hsv': expected one of bgr, rgb"),
    (dict(runtime="tensorrt"), "runtime='tensorrt': expected one of auto, torch, onnx, opencv"),
    (dict(backend="torch"), "pass runtime= instead"),
])
def test_bad_arguments_are_one_line_errors(tuned_checkpoint, call, message):
    with pytest.raises(SiamtoolError, match=message.replace("(", r"\(")) as e:
        siamtool.load_tracker(tuned_checkpoint, **call)
    assert "\n" not in str(e.value)


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(SiamtoolError, match=r"checkpoint='.*nope.pt': not found"):
        siamtool.load_tracker(tmp_path / "nope.pt")


@pytest.mark.parametrize("image, box, message", [
    ([[1, 2], [3, 4]], (10, 10, 20, 20), "image: expected a uint8 numpy array .* got list"),
    (np.zeros((50, 60, 3), np.float32), (10, 10, 20, 20), "got dtype float32"),
    (np.zeros((50, 60, 2), np.uint8), (10, 10, 20, 20), r"got an array of shape \(50, 60, 2\)"),
    (np.zeros((50, 60, 3), np.uint8), (10, 10, 0, 20), "initial box 10,10,0,20: width and height must be > 0"),
    (np.zeros((50, 60, 3), np.uint8), (100, 10, 20, 20), "is outside the 60x50 frame"),
    (np.zeros((50, 60, 3), np.uint8), (1, 2, 3), "expected 4 numbers"),
])
def test_bad_images_and_boxes_are_one_line_errors(tuned_checkpoint, image, box, message):
    tracker = siamtool.load_tracker(tuned_checkpoint, device="cpu", runtime="torch")
    with pytest.raises(SiamtoolError, match=message):
        tracker.init(image, box)


def test_an_export_folder_carries_its_tracking_settings(tuned_export, tmp_path):
    report = json.loads((tuned_export / REPORT_FILE).read_text())
    assert report[TRACK_KEY]["window_influence"] == 0.1 and report[TRACK_KEY]["scale"] == "head"
    backend = OnnxBackend(tuned_export)
    assert (backend.cfg.track.window_influence, backend.cfg.track.lost_threshold) == (0.1, 0.1)
    # export.json is where a person tunes an export: an edit there wins.
    edited = shutil.copytree(tuned_export, tmp_path / "edited")
    report[TRACK_KEY]["window_influence"] = 0.25
    (edited / REPORT_FILE).write_text(json.dumps(report))
    tracker = siamtool.load_tracker(edited)
    assert type(tracker.backend).__name__ == "OnnxBackend"
    assert tracker.cfg.track.window_influence == 0.25 and tracker.cfg.track.scale == "head"
    (edited / REPORT_FILE).write_text("{not json")
    with pytest.raises(SiamtoolError, match="export.json: not readable JSON"):
        OnnxBackend(edited)
    with pytest.raises(SiamtoolError, match="runtime='onnx' or 'opencv', not 'torch'"):
        siamtool.load_tracker(tuned_export, runtime="torch")


def test_tracker_uses_the_backends_settings_and_warns_about_library_defaults(tuned_export):
    backend = OnnxBackend(tuned_export)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Tracker(backend).cfg.track.window_influence == 0.1
    with pytest.warns(UserWarning, match=r"library defaults.*window_influence 0.3 vs 0.1"):
        tracker = Tracker(backend, Config())
    assert tracker.cfg.track.window_influence == 0.3  # honoured: the caller asked for it


def test_a_first_cpu_run_announces_the_export_as_a_warning(tuned_checkpoint, tmp_path):
    fresh = save_tuned(tmp_path / "fresh.pt", seed=11)  # other weights: not in the export cache yet
    with pytest.warns(UserWarning, match="exporting it to ONNX.*runtime='torch'"):
        siamtool.load_tracker(fresh, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        siamtool.load_tracker(fresh, device="cpu")  # cached now: silent
        siamtool.load_tracker(save_tuned(tmp_path / "other.pt", seed=12), device="cpu", runtime="torch")


def test_loading_an_export_on_cpu_does_not_import_torch(tuned_checkpoint, tuned_export):
    """The ONNX path (an export folder, or a checkpoint whose export is cached) runs without torch: importing
    it was most of the load time (benchmarks/load_time.py)."""
    siamtool.load_tracker(tuned_checkpoint, device="cpu")  # fills this session's export cache
    for source in (tuned_export, tuned_checkpoint):
        code = (f"import sys, numpy as np, siamtool; t = siamtool.load_tracker({str(source)!r}, device='cpu'); "
                "frame = np.zeros((120, 160, 3), np.uint8); frame[40:70, 60:90] = 255; t.init(frame, (60, 40, 30, 30)); "
                "ok, box = t.update(frame); print(type(t.backend).__name__, len(box), 'torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.split() == ["OnnxBackend", "4", "False"]
