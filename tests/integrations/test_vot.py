"""`siamtool vot`: TraX regions to boxes (vot-trax installed), and the VOT toolkit's own `vot test siamtool` on
its dummy sequence (where a toolkit is installed: `$SIAMTOOL_VOT` names its `vot` executable, else PATH's).

The toolkit lives in an environment of its own (vot-toolkit 0.9.0 pins attributee 0.1.9, see .ci/run); it
only needs to start the `siamtool` command of this environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamtool.errors import SiamtoolError

region = pytest.importorskip("trax.region", reason="vot-trax (extra `vot`) is not installed")

from siamtool.integrations.vot import region_box, track_overrides  # noqa: E402

STANZA = "[siamtool]\nlabel = siamtool\nprotocol = trax\ncommand = siamtool vot{args}\n"
"""docs/tracking.md's trackers.ini stanza (the test adds --checkpoint: a tiny model, no first export)."""


def test_regions_become_boxes():
    assert region_box(region.Rectangle.create(10.5, 20, 30, 40)) == (10.5, 20.0, 30.0, 40.0)
    polygon = region.Polygon.create([(12.0, 5.0), (40.0, 9.0), (30.0, 50.0), (10.0, 30.0)])
    assert region_box(polygon) == (10.0, 5.0, 30.0, 45.0)
    mask = np.zeros((20, 30), np.uint8)
    mask[4:9, 7:19] = 1
    assert region_box(region.Mask.create(mask, 100, 50)) == (107.0, 54.0, 12.0, 5.0)
    with pytest.raises(SiamtoolError, match="the mask is empty"):
        region_box(region.Mask.create(np.zeros((5, 5), np.uint8)))


def test_set_takes_track_keys_only():
    assert track_overrides(["track.window_influence=0.2", "track.scale=head"]) == {"window_influence": 0.2,
                                                                                   "scale": "head"}
    with pytest.raises(SiamtoolError, match="track.\\* keys only"):
        track_overrides(["data.context=2"])


def _vot_executable() -> str | None:
    return os.environ.get("SIAMTOOL_VOT") or shutil.which("vot")


@pytest.mark.slow
def test_vot_test_siamtool_concludes_on_the_dummy_sequence(tuned_checkpoint, tmp_path):
    vot = _vot_executable()
    if vot is None:
        pytest.skip("the VOT toolkit is not installed here (set $SIAMTOOL_VOT to its `vot` executable)")
    here = Path(sys.executable).parent
    if shutil.which("siamtool", path=str(here)) is None:
        pytest.skip(f"no `siamtool` command next to {sys.executable} (pip install -e . into this environment)")
    (tmp_path / "trackers.ini").write_text(STANZA.format(args=f" --checkpoint {tuned_checkpoint}"))
    env = {**os.environ, "PATH": f"{here}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg"}
    r = subprocess.run([vot, "test", "siamtool"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    log = r.stdout + r.stderr
    # The toolkit logs its own spelling ("successfuly"); an error or a timeout logs neither line.
    assert "Test concluded success" in log, log[-3000:]
    assert "Error during tracker execution" not in log, log[-3000:]
