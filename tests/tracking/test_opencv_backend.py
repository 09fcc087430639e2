"""OpenCV DNN as a runtime: the exported graphs give onnxruntime's outputs in `cv2.dnn`, the Tracker runs on
them with the same boxes, and folders are refused with the same lines as by the onnxruntime backend."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.config import load_config
from siamtool.errors import SiamtoolError
from siamtool.export.onnx import _box_rel_diff, _max_diff, _rel_diff, export_model, parity_sample
from siamtool.geometry import CropWindow, crop_antialiased, search_window, template_window
from siamtool.images import OPENCV_TESTED, opencv_untested
from siamtool.onnx_format import SEARCH_FILE, TEMPLATE_FILE
from siamtool.tracking.backends import load_backend, merge_tracking_config
from siamtool.tracking.onnx_backend import OnnxBackend
from siamtool.tracking.opencv_backend import OpenCVBackend
from siamtool.tracking.tracker import Tracker
from tests.conftest import Recorder, tiny_config
from tests.onnx_fixtures import STABLE_TRACK, peaked_model, sequence_frames
from tests.test_geometry import resample_reference
from tests.tracking.test_onnx_backend import TOL_PX, _folder, _frames_source, _init_box

runner = CliRunner()
RUNS_ON = f"OpenCV {cv2.__version__}"
"""Every failure names the OpenCV it ran on: results depend on the release (pyproject.toml's bounds)."""
TOLERANCE = 1e-4
"""`export.tolerance`: what an export must meet against PyTorch, in `DIFF_UNITS`."""

CNN_BACKBONES = ("resnet18", "efficientnet_lite0", "mobilenet_v3_large", "dinov3_convnext_tiny")
"""The backbones whose graphs OpenCV's importer takes (efficientnet_lite0 is the shipped tracker's)."""


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, object]:
    """One export per backbone of a tiny random model with spread scores and boxes (`peaked_model`)."""
    root = tmp_path_factory.mktemp("opencv")
    out = {}
    for backbone in (*CNN_BACKBONES, "dinov3_vits16"):
        cfg = tiny_config(backbone=backbone)
        assert export_model(peaked_model(cfg), cfg, root / backbone).passed
        out[backbone] = root / backbone
    return out


@pytest.mark.parametrize("backbone", CNN_BACKBONES)
def test_opencv_and_onnxruntime_agree_on_the_exported_graphs(exports, backbone):
    """Template then search, on crops of real frames cut as the Tracker cuts them, measured as the
    export's parity check measures (score absolute, boxes relative to their size, features relative)."""
    cv, ort = OpenCVBackend(exports[backbone], threads=1), OnnxBackend(exports[backbone], threads=1)
    sample = parity_sample(cv.cfg)
    for z, x in zip(sample.templates, sample.searches):
        f_cv, f_ort = cv.template(z), ort.template(z)
        assert f_cv.shape == f_ort.shape and _rel_diff(f_cv, f_ort) < TOLERANCE, RUNS_ON
        (s_cv, b_cv, x_cv), (s_ort, b_ort, x_ort) = cv.search(x, f_cv), ort.search(x, f_ort)
        assert s_cv.shape == s_ort.shape and b_cv.shape == b_ort.shape and x_cv.shape == x_ort.shape, RUNS_ON
        assert _max_diff(s_cv, s_ort) < TOLERANCE, RUNS_ON
        assert _box_rel_diff(b_cv, b_ort) < TOLERANCE, RUNS_ON
        assert _rel_diff(x_cv, x_ort) < TOLERANCE, RUNS_ON
        assert np.ptp(s_ort) > 0.01 and np.ptp(b_ort[..., :2]) > 1.0  # outputs that vary: agreement means something


def test_outputs_survive_the_next_forward(exports):
    """The Tracker keeps search features across frames (online model): a later run must not overwrite them."""
    cv = OpenCVBackend(exports["resnet18"], threads=1)
    sample = parity_sample(cv.cfg)
    feats = cv.template(sample.templates[0])
    first = cv.search(sample.searches[0], feats)
    kept = [a.copy() for a in first]
    cv.search(sample.searches[1], cv.template(sample.templates[1]))
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)


def test_a_graph_opencv_cannot_load_is_refused_in_one_line(exports):
    """OpenCV 5.0 refuses the DINOv3 ViT graphs (an `If` node in the RoPE embeddings); should a later OpenCV
    take them, they must agree with onnxruntime like the others."""
    try:
        cv = OpenCVBackend(exports["dinov3_vits16"], threads=1)
    except SiamtoolError as e:
        text = str(e)
        assert "DNN cannot load it" in text and "track.backend=onnx" in text and "\n" not in text
        return
    ort = OnnxBackend(exports["dinov3_vits16"], threads=1)
    sample = parity_sample(cv.cfg)
    s_cv = cv.search(sample.searches[0], cv.template(sample.templates[0]))[0]
    assert _max_diff(s_cv, ort.search(sample.searches[0], ort.template(sample.templates[0]))[0]) < TOLERANCE


def test_folders_are_refused_like_the_onnxruntime_backend_refuses_them(exports, tmp_path):
    a, b = exports["resnet18"], exports["efficientnet_lite0"]
    with pytest.raises(SiamtoolError, match="come from different exports"):
        OpenCVBackend(_folder(tmp_path, a / TEMPLATE_FILE, b / SEARCH_FILE))
    with pytest.raises(SiamtoolError, match="holds the 'search' graph, expected 'template'"):
        OpenCVBackend(_folder(tmp_path, a / SEARCH_FILE, a / TEMPLATE_FILE))
    (tmp_path / "mixed" / SEARCH_FILE).unlink()
    with pytest.raises(SiamtoolError, match="search.onnx: missing"):
        OpenCVBackend(tmp_path / "mixed")
    with pytest.raises(SiamtoolError, match="export folder not found"):
        OpenCVBackend(tmp_path / "nowhere")


STEP_TOL_PX = 0.05
"""How far the OpenCV tracker's box may be from onnxruntime's after one frame from the same state. Measured:
~3e-5 px on OpenCV 5.0 and 5.1 (also with OPENCV_CPU_DISABLE=AVX2, the other kernels of 5.1); outputs
moved by 1e-4 of their value move it ~0.03-0.07 px, so a graph off by more than rounding fails."""


def _twin(tracker: Tracker, backend) -> Tracker:
    """A copy of `tracker`'s whole state (box, reference score, online model) running on `backend`."""
    own, tracker.backend = tracker.backend, None
    try:
        twin = copy.deepcopy(tracker)
    finally:
        tracker.backend = own
    twin.backend = backend
    return twin


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_a_tracker_on_opencv_gives_the_boxes_of_onnxruntime(stable_export, synthetic_lasot, online):
    """30 frames of a sequence, with and without the online target model (which learns on the search
    features the backend returns), compared frame by frame: at each frame a twin of the onnxruntime
    tracker, same state, tracks the frame on OpenCV and must give the same box.

    Why not two free-running trackers: the tracker amplifies float32 rounding over frames (with the online
    model on, outputs moved by 1e-6 of their value put two free runs 14 px apart by frame 30), so which
    kernels an OpenCV build dispatches on a CPU decided the old free-running test: OpenCV 5.1 with AVX2
    disabled (what another CPU runs) drifted 33.7 px while every node of both graphs stayed within 3e-6
    of onnxruntime. Frame by frame the error cannot compound, and what is measured is the runtime. With
    the online model the size comes from the box head (`track.scale=head`): the DSST scale filter reads
    the frame's grey pixels, not the backend, and its argmax over 17 scales flips on a centre 1e-5 px away.
    """
    cv, ort = OpenCVBackend(stable_export, threads=1), OnnxBackend(stable_export, threads=1)
    # Sizes from the box head, not DSST: on the random model's flat scale response, DSST's argmax over 17
    # scales flips when the two runtimes' sub-cell centres differ by 1e-4 px (the online peak is
    # continuous now, no longer snapped to 1/4 cell), and the trajectories then part by a whole scale step.
    overrides = [s for s in STABLE_TRACK if not s.startswith("track.online")] + [f"track.online={online}".lower(),
                                                                                 "track.scale=head"]
    cfg = merge_tracking_config(cv.cfg, load_config(None, overrides))
    frames, box, _ = sequence_frames(31, synthetic_lasot)
    reference = Tracker(ort, cfg)
    reference.initialize(frames[0], box)
    assert (reference.online is not None) == online
    steps, boxes, learned = [], [], []
    for f in frames[1:]:
        twin = _twin(reference, cv)
        mine = twin.track(f).box
        boxes.append(reference.track(f).box)
        steps.append(np.abs(mine - boxes[-1]).max())
        if online:  # what the online model learned from this frame's features, OpenCV's against onnxruntime's
            learned.append(_rel_diff(*(t.online.translation.memory.model()[0] for t in (twin, reference))))
    worst = int(np.argmax(steps))
    assert steps[worst] < STEP_TOL_PX, f"{RUNS_ON}: frame {worst + 1} is {steps[worst]:.3g} px away"
    assert max(learned, default=0.0) < TOLERANCE, f"{RUNS_ON}: the online models differ by {max(learned):.3g}"
    assert np.ptp(np.array(boxes)[:, :2], axis=0).max() > 5.0  # the box moves: not two trackers standing still


def test_load_backend_picks_opencv_for_onnx_folders_and_checkpoints(stable_checkpoint, stable_export, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("SIAMTOOL_CACHE", str(tmp_path / "cache"))
    user = tiny_config("track.backend=opencv", "track.size_lr=0.3")
    backend, cfg, name = load_backend(None, stable_export, torch.device("cpu"), user)
    assert isinstance(backend, OpenCVBackend) and name == "stable-onnx" and cfg.track.size_lr == 0.3
    backend, cfg, name = load_backend(stable_checkpoint, None, torch.device("cpu"), user)
    assert isinstance(backend, OpenCVBackend) and backend.path.parent == tmp_path / "cache" / "onnx"
    assert name == "stable-run-tiny" and cfg.data.search_size == 80


def test_cli_track_with_opencv_gives_the_boxes_of_onnxruntime(stable_export, synthetic_lasot, tmp_path):
    sets = [a for s in STABLE_TRACK for a in ("--set", s)]
    common = ["--device", "cpu", "track", _frames_source(synthetic_lasot), "--init", _init_box(synthetic_lasot),
              "--no-show", "--onnx", str(stable_export), *sets]
    r1 = runner.invoke(app, [*common, "--set", "track.backend=opencv", "--save-boxes", str(tmp_path / "cv.txt")])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, [*common, "--save-boxes", str(tmp_path / "ort.txt")])
    assert r2.exit_code == 0, r2.output
    a, b = (np.loadtxt(tmp_path / f, delimiter=",") for f in ("cv.txt", "ort.txt"))
    assert a.shape == b.shape and len(a) >= 8
    assert np.abs(a[:, :4] - b[:, :4]).max() < TOL_PX, RUNS_ON


def _doc_crop(frame, cx, cy, side, out):
    """docs/runtimes.md's crop ("Crops": k x k block means, then exact bilinear taps), the slow way."""
    return resample_reference(frame, CropWindow(cx, cy, side, out))


def test_the_documented_recipe_gives_the_backends_outputs(stable_export, synthetic_lasot):
    """The C++ recipe of docs/runtimes.md (window formula, crop, blobFromImage, two nets) in OpenCV's Python
    binding gives the OpenCV backend's outputs on the Tracker's own crops, for a large target (reduced
    crop) and a small one."""
    backend = OpenCVBackend(stable_export, threads=1)
    t, s, context = backend.template_size, backend.search_size, backend.cfg.data.context
    frames, box, _ = sequence_frames(2, synthetic_lasot)
    tnet = cv2.dnn.readNetFromONNX(str(stable_export / TEMPLATE_FILE))
    snet = cv2.dnn.readNetFromONNX(str(stable_export / SEARCH_FILE))
    for b in (np.asarray(box, float), np.array([box[0], box[1], 12.0, 9.0])):
        x, y, w, h = b
        p = context * (w + h)
        side_z = float(np.sqrt((w + p) * (h + p)))
        cx, cy = x + w / 2, y + h / 2
        z_doc = _doc_crop(frames[0], cx, cy, side_z, t)
        x_doc = _doc_crop(frames[1], cx, cy, side_z * s / t, s)
        z_ref = crop_antialiased(frames[0], template_window(b, context, t))
        x_ref = crop_antialiased(frames[1], search_window(b, context, t, s))
        np.testing.assert_array_equal(z_doc, z_ref)
        np.testing.assert_array_equal(x_doc, x_ref)
        tnet.setInput(cv2.dnn.blobFromImage(z_doc, 1.0, swapRB=True), "template")
        feat = tnet.forward("template_features").copy()
        snet.setInput(cv2.dnn.blobFromImage(x_doc, 1.0, swapRB=True), "search")
        snet.setInput(feat, "template_features")
        score, boxes, _ = snet.forward(["score", "boxes", "search_features"])
        ref_score, ref_boxes, _ = backend.search(np.ascontiguousarray(x_ref[..., ::-1]),
                                                 backend.template(np.ascontiguousarray(z_ref[..., ::-1])))
        np.testing.assert_array_equal(score[0], ref_score)
        np.testing.assert_array_equal(boxes[0], ref_boxes)


def test_a_cached_export_opencv_refuses_is_not_exported_again(stable_checkpoint, tmp_path, monkeypatch):
    """OpenCV refusing a complete export (an op it lacks, as for DINOv3 ViTs) is final: one line, no
    re-export on every run."""
    from siamtool.tracking import opencv_backend

    monkeypatch.setenv("SIAMTOOL_CACHE", str(tmp_path / "cache"))
    user = tiny_config("track.backend=opencv")

    def refuse(file):
        raise SiamtoolError(f"{file}: OpenCV DNN cannot load it (Node [If]); use --set track.backend=onnx")

    monkeypatch.setattr(opencv_backend, "_load", refuse)
    recorder = Recorder()
    with pytest.raises(SiamtoolError, match="DNN cannot load it"):
        load_backend(stable_checkpoint, None, torch.device("cpu"), user, recorder)
    assert "exporting it to ONNX" in recorder.text
    (search,) = (tmp_path / "cache" / "onnx").glob(f"*/{SEARCH_FILE}")
    stamp = search.stat().st_mtime_ns
    again = Recorder()
    with pytest.raises(SiamtoolError, match="DNN cannot load it"):
        load_backend(stable_checkpoint, None, torch.device("cpu"), user, again)
    assert "exporting" not in again.text and search.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    monkeypatch.setenv("SIAMTOOL_CACHE", str(tmp_path / "cache"))
    backend, _, _ = load_backend(stable_checkpoint, None, torch.device("cpu"), user)
    assert isinstance(backend, OpenCVBackend) and backend.path == search.parent


def test_the_declared_opencv_bounds_are_the_tested_ones_and_outside_them_the_user_is_told(stable_export, tmp_path,
                                                                                          monkeypatch):
    """pyproject.toml's opencv-python bounds are `OPENCV_TESTED` (what CI installs is what was tested), the
    installed OpenCV is inside them, and a tracker loaded on another OpenCV warns through the Reporter."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    (spec,) = re.findall(r'"opencv-python([^"]*)"', text)
    low, high = OPENCV_TESTED
    assert spec == f">={low[0]}.{low[1]}.{low[2]},<{high[0]}.{high[1]}.{high[2] + 1}", spec
    assert opencv_untested() is None, f"{RUNS_ON} is outside the tested bounds {spec}"
    assert opencv_untested(".".join(map(str, high))) is None and opencv_untested(".".join(map(str, low))) is None
    for outside in ("4.14.0", f"{high[0]}.{high[1] + 1}.0", f"{high[0] + 1}.0.0-dev"):
        line = opencv_untested(outside)
        assert line and f"OpenCV {outside} is installed" in line and f'"opencv-python{spec}"' in line
    monkeypatch.setattr(cv2, "__version__", "4.14.0")
    recorder = Recorder()
    load_backend(None, stable_export, torch.device("cpu"), tiny_config("track.backend=opencv"), recorder)
    assert "OpenCV 4.14.0 is installed" in recorder.text and "\n" not in recorder.text.strip()
    monkeypatch.undo()
    quiet = Recorder()
    load_backend(None, stable_export, torch.device("cpu"), tiny_config("track.backend=opencv"), quiet)
    assert "OpenCV" not in quiet.text
