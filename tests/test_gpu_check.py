"""benchmarks/gpu_check.sh: valid bash, and its CPU fallback runs every stage end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
def test_gpu_check_cpu_fallback_runs_every_stage(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    out = subprocess.run(["bash", str(SCRIPT), "--cpu"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "CPU fallback" in out.stdout
    for stage in ("== 1. data", "== 2. data pipeline on cpu", "== 3. training steps on cpu", "== summary"):
        assert stage in out.stdout
    assert "pairs_per_s_per_gpu=" in out.stdout and "loader_pairs_per_s_cpu_1_workers=" in out.stdout
    assert not list(tmp_path.glob("siamtool-gpu-check.*")), "the work folder is removed"
