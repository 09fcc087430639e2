"""The onnxruntime backend: same Tracker, same crops, same boxes as PyTorch; mismatched graphs refused."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.config import load_config
from siamtool.errors import SiamtoolError
from siamtool.export.onnx import export_model
from siamtool.models.checkpoint import load_model
from siamtool.onnx_format import SEARCH_FILE, TEMPLATE_FILE
from siamtool.tracking.backends import TorchBackend, merge_tracking_config
from siamtool.tracking.onnx_backend import OnnxBackend
from siamtool.tracking.tracker import Tracker
from tests.conftest import SHARED, tiny_config
from tests.onnx_fixtures import STABLE_TRACK, peaked_model, sequence_frames

runner = CliRunner()
TOL_PX = 0.5



@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_one_sequence_tracked_through_both_backends_gives_the_same_boxes(stable_checkpoint, stable_export,
                                                                         synthetic_lasot, online):
    """Free-running: each backend's tracker follows its own boxes for 30 frames of a real sequence (without
    ../shared a synthetic one whose target, and tracked box, changes size), with and without the online
    target model (which learns on the features each runtime returns; sizes from the box head there, see
    test_opencv_backend for why not DSST on this random model)."""
    model, _ = load_model(stable_checkpoint)
    onnx_backend = OnnxBackend(stable_export, threads=1)
    # Crop geometry from the export's metadata, tracking knobs from the user, as `--onnx` does.
    overrides = list(STABLE_TRACK) + (["track.online=true", "track.scale=head"] if online else [])
    cfg = merge_tracking_config(onnx_backend.cfg, load_config(None, overrides))
    frames, box, name = sequence_frames(31, synthetic_lasot, synthetic="cat-2")
    trackers = [Tracker(TorchBackend(model, "cpu"), cfg), Tracker(onnx_backend, cfg)]
    for t in trackers:
        t.initialize(frames[0], box)
        assert (t.online is not None) == online
    boxes = np.array([[t.track(f).box for t in trackers] for f in frames[1:]])  # (frames, backend, 4)
    diff = np.abs(boxes[:, 0] - boxes[:, 1]).max(axis=1)
    assert diff.max() < TOL_PX, diff
    # The boxes move and change size: agreement is not that of two trackers standing still.
    assert np.ptp(boxes[:, 0, :2], axis=0).max() > 5.0
    assert np.ptp(boxes[:, 0, 2:], axis=0).max() > 2.0  # bag-1, or without ../shared synthetic cat-2


def test_same_state_same_box_with_default_post_processing(tmp_path, synthetic_lasot):
    """Frame by frame from the same state, with the default window/penalty picking any cell of the map.

    Sizes from the box head (`track.scale=head`, the shipped tracker's): the DSST scale filter reads the
    frame's grey pixels, not the backend, and on this random model's target half outside the frame its
    scale response is flat, so a centre 1e-5 px away (onnxruntime 1.32 against PyTorch) moved the size by
    a whole scale step, 3.2 px (test_opencv_backend says the same)."""
    cfg = tiny_config("track.lost_threshold=0.0", "track.scale=head", backbone="dinov3_vits16")
    model = peaked_model(cfg)
    assert export_model(model, cfg, tmp_path).passed
    ref, onnx_tracker = Tracker(TorchBackend(model, "cpu"), cfg), Tracker(OnnxBackend(tmp_path, threads=1), cfg)
    frames, box, _ = sequence_frames(21, synthetic_lasot)
    ref.initialize(frames[0], box)
    onnx_tracker.initialize(frames[0], box)
    np.testing.assert_allclose(onnx_tracker.features, ref.features.numpy(), atol=1e-4)
    cells = set()
    for frame in frames[1:]:
        # The whole state, the online models' too: a sample one tracker took and the other did not (a
        # confidence gate met by one runtime's 1e-6) would otherwise decide a later frame's DSST scale.
        onnx_tracker.center, onnx_tracker.size, onnx_tracker.growth = ref.center.copy(), ref.size.copy(), ref.growth
        onnx_tracker.online, onnx_tracker.lost = copy.deepcopy(ref.online), ref.lost
        onnx_tracker.reference_score, onnx_tracker.reference_frames = ref.reference_score, ref.reference_frames
        a, b = ref.track(frame), onnx_tracker.track(frame)
        np.testing.assert_array_equal(a.search_crop, b.search_crop)
        np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-4)
        assert np.abs(a.box - b.box).max() < TOL_PX
        assert a.lost == b.lost
        cells.add(tuple(np.round(a.crop_box[:2] / 16).astype(int)))
    assert len(cells) > 1  # the chosen cell changes: the argmax over the map is really compared


# ------------------------------------------------------------------------------------ refusals


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory) -> tuple[Path, Path]:
    """Two exports of different (same-architecture) models."""
    root = tmp_path_factory.mktemp("two")
    cfg = tiny_config(backbone="resnet18")
    for seed in (0, 1):
        assert export_model(peaked_model(cfg, seed), cfg, root / f"e{seed}").passed
    return root / "e0", root / "e1"


def _rewrite_metadata(path: Path, **changes: str | None) -> None:
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))


def _folder(tmp_path: Path, template: Path, search: Path) -> Path:
    d = tmp_path / "mixed"
    d.mkdir(exist_ok=True)
    shutil.copy(template, d / TEMPLATE_FILE)
    shutil.copy(search, d / SEARCH_FILE)
    return d


def test_graphs_from_two_exports_are_refused(two_exports, tmp_path):
    a, b = two_exports
    with pytest.raises(SiamtoolError, match="come from different exports"):
        OnnxBackend(_folder(tmp_path, a / TEMPLATE_FILE, b / SEARCH_FILE))


def test_other_format_version_is_refused(two_exports, tmp_path):
    a, _ = two_exports
    d = _folder(tmp_path, a / TEMPLATE_FILE, a / SEARCH_FILE)
    _rewrite_metadata(d / SEARCH_FILE, format_version="99")
    with pytest.raises(SiamtoolError, match="export format 99, this siamtool .* reads format 2"):
        OnnxBackend(d)


def test_graphs_without_siamtool_metadata_or_in_the_wrong_place_are_refused(two_exports, tmp_path):
    a, _ = two_exports
    d = _folder(tmp_path, a / SEARCH_FILE, a / TEMPLATE_FILE)  # swapped
    with pytest.raises(SiamtoolError, match="holds the 'search' graph, expected 'template'"):
        OnnxBackend(d)
    d = _folder(tmp_path, a / TEMPLATE_FILE, a / SEARCH_FILE)
    _rewrite_metadata(d / TEMPLATE_FILE, format=None)
    with pytest.raises(SiamtoolError, match="not a siamtool export"):
        OnnxBackend(d)


def test_missing_or_corrupt_graphs_are_one_line(two_exports, tmp_path):
    a, _ = two_exports
    d = _folder(tmp_path, a / TEMPLATE_FILE, a / SEARCH_FILE)
    (d / SEARCH_FILE).write_bytes((d / SEARCH_FILE).read_bytes()[:1000])
    with pytest.raises(SiamtoolError, match="onnxruntime cannot load it"):
        OnnxBackend(d)
    (d / SEARCH_FILE).unlink()
    with pytest.raises(SiamtoolError, match="search.onnx: missing"):
        OnnxBackend(d)


# ----------------------------------------------------------------------------------------- CLI


def _frames_source(synthetic_lasot: Path) -> str:
    real = SHARED / "real_lasot" / "bag" / "bag-1" / "img"
    if real.is_dir():
        return str(real / "000000[01]?.jpg")  # frames 1..19
    return str(synthetic_lasot / "cat" / "cat-1" / "img" / "0000000?.jpg")


def _init_box(synthetic_lasot: Path) -> str:
    _, box, _ = sequence_frames(1, synthetic_lasot)
    return ",".join(f"{v:.3f}" for v in box)


def test_cli_track_onnx_gives_the_boxes_of_track_checkpoint(stable_checkpoint, stable_export, synthetic_lasot,
                                                             tmp_path):
    sets = [a for s in STABLE_TRACK for a in ("--set", s)]
    common = [_frames_source(synthetic_lasot), "--init", _init_box(synthetic_lasot), "--no-show", *sets]
    r1 = runner.invoke(app, ["--device", "cpu", "track", *common, "--onnx", str(stable_export),
                             "--save-boxes", str(tmp_path / "onnx.txt")])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, ["--device", "cpu", "track", *common, "--checkpoint", str(stable_checkpoint),
                             "--set", "track.backend=torch", "--save-boxes", str(tmp_path / "torch.txt")])
    assert r2.exit_code == 0, r2.output
    a = np.loadtxt(tmp_path / "onnx.txt", delimiter=",")
    b = np.loadtxt(tmp_path / "torch.txt", delimiter=",")
    assert a.shape == b.shape and len(a) >= 8
    assert np.abs(a[:, :4] - b[:, :4]).max() < TOL_PX
    assert np.ptp(b[:, :2], axis=0).max() > 2.0


def test_cli_track_refuses_mismatched_graphs(two_exports, synthetic_lasot, tmp_path):
    a, b = two_exports
    d = _folder(tmp_path, a / TEMPLATE_FILE, b / SEARCH_FILE)
    r = runner.invoke(app, ["--device", "cpu", "track", _frames_source(synthetic_lasot), "--onnx", str(d),
                            "--init", _init_box(synthetic_lasot), "--no-show"])
    assert r.exit_code == 2
    assert "come from different exports" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_cli_eval_onnx_gives_the_results_of_eval_checkpoint(stable_checkpoint, stable_export, synthetic_lasot,
                                                            tmp_path):
    sets = [a for s in STABLE_TRACK for a in ("--set", s)]
    split = tmp_path / "split.txt"
    split.write_text("cat-1\ndog-2\n")
    common = ["--device", "cpu", "eval", "--lasot", str(synthetic_lasot), "--split", str(split), *sets]
    r1 = runner.invoke(app, [*common, "--onnx", str(stable_export), "--out", str(tmp_path / "r1")])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, [*common, "--checkpoint", str(stable_checkpoint), "--set", "track.backend=torch",
                             "--out", str(tmp_path / "r2")])
    assert r2.exit_code == 0, r2.output
    for seq in ("cat-1", "dog-2"):
        a = np.loadtxt(tmp_path / "r1" / "stable-onnx" / f"{seq}.txt", delimiter=",")
        b = np.loadtxt(tmp_path / "r2" / "stable-run-tiny" / f"{seq}.txt", delimiter=",")
        assert a.shape == b.shape == (40, 4)
        assert np.abs(a - b).max() < TOL_PX


@pytest.mark.parametrize(("spin", "allow", "stop"), [("off", "0", ""), ("run", "1", "1"), ("always", "1", "")])
def test_worker_threads_never_busy_wait_by_default_and_loops_are_split_dynamically(stable_export, spin, allow, stop):
    """By default no worker spins (under load spinning cost 27-37 % of the tracking speed:
    benchmarks/ort_threads.py); `spin="run"` spins only while a run lasts; every session splits its
    loops in dynamic blocks."""
    backend = OnnxBackend(stable_export, threads=2, **({} if spin == "off" else {"spin": spin}))
    for session in (backend._template, backend._search):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
        assert options.get_session_config_entry("session.dynamic_block_base") == "4"
        if stop:
            assert options.get_session_config_entry("session.force_spinning_stop") == stop
        else:  # unset: onnxruntime's default, spinning on after a run
            with pytest.raises(RuntimeError):
                options.get_session_config_entry("session.force_spinning_stop")
