"""The got10k adapter, run by the installed got10k toolkit on a small GOT-10k-layout folder written here."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("got10k", reason="the got10k toolkit (extra `got10k`) is not installed")

from got10k.experiments import ExperimentGOT10k  # noqa: E402
from got10k.trackers import Tracker as ToolkitTracker  # noqa: E402

from siamtool import load_tracker  # noqa: E402
from siamtool.data.synthetic import render_sequence  # noqa: E402
from siamtool.integrations.got10k import SiamtoolTracker  # noqa: E402

SEQUENCES = ("GOT-10k_Val_000001", "GOT-10k_Val_000002")


def write_got10k_val(root: Path, frames: int = 10) -> dict[str, np.ndarray]:
    """ROOT/val/list.txt and one folder per sequence: 00000001.jpg..., groundtruth.txt (x,y,w,h per frame),
    meta_info.ini and the cover/absence/cut_by_image labels the toolkit's val report reads."""
    val = root / "val"
    gts = {}
    for i, name in enumerate(SEQUENCES):
        seq = val / name
        seq.mkdir(parents=True)
        images, boxes, _, _ = render_sequence(np.random.default_rng(20 + i), frames, (192, 144))
        for k, img in enumerate(images):
            cv2.imwrite(str(seq / f"{k + 1:08d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        np.savetxt(seq / "groundtruth.txt", boxes, fmt="%.4f", delimiter=",")
        (seq / "meta_info.ini").write_text("[METAINFO]\nobject_class: synthetic\nmotion_class: moving\n"
                                          "resolution: (192, 144)\n")
        for label, value in (("cover", 8), ("absence", 0), ("cut_by_image", 0)):
            (seq / f"{label}.label").write_text(f"{value}\n" * frames)
        gts[name] = boxes
    (val / "list.txt").write_text("\n".join(SEQUENCES) + "\n")
    return gts


def test_the_toolkit_runs_and_scores_siamtool_on_a_got10k_layout(tuned_checkpoint, tmp_path):
    gts = write_got10k_val(tmp_path / "GOT-10k")
    tracker = SiamtoolTracker(tuned_checkpoint, device="cpu")
    assert isinstance(tracker, ToolkitTracker)
    assert (tracker.name, tracker.is_deterministic) == ("siamtool", True)
    experiment = ExperimentGOT10k(str(tmp_path / "GOT-10k"), subset="val", result_dir=str(tmp_path / "results"),
                                  report_dir=str(tmp_path / "reports"))
    experiment.run(tracker)
    experiment.report([tracker.name])
    direct = load_tracker(tuned_checkpoint, device="cpu", color="rgb")
    for name, gt in gts.items():
        record = tmp_path / "results" / "GOT-10k" / "siamtool" / name / f"{name}_001.txt"
        boxes = np.loadtxt(record, delimiter=",")
        assert boxes.shape == (len(gt), 4)
        assert not (record.parent / f"{name}_002.txt").exists()  # deterministic: one repetition
        np.testing.assert_allclose(boxes[0], gt[0], atol=1e-3)
        # The toolkit's answers are the Python API's on the same PIL frames.
        files = sorted((tmp_path / "GOT-10k" / "val" / name).glob("*.jpg"))
        first = np.loadtxt(files[0].parent / "groundtruth.txt", delimiter=",")[0]  # as the toolkit reads it
        direct.initialize(Image.open(files[0]), first)
        expected = [direct.track(Image.open(f)).box for f in files[1:]]
        np.testing.assert_allclose(boxes[1:], expected, atol=1e-3)  # the toolkit writes 3 decimals
    performance = json.loads((tmp_path / "reports" / "GOT-10k" / "siamtool" / "performance.json").read_text())
    assert 0.0 <= performance["siamtool"]["overall"]["ao"] <= 1.0
