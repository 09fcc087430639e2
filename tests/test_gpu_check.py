"""benchmarks/gpu_check.sh: valid bash, and its CPU fallback runs every stage end to end."""

from __future__ import annotations

import os
import re
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
    # The summary repeats what stages 2 and 3 measured, as positive numbers (not just the names).
    summary = out.stdout.split("== summary")[1]
    values = dict(re.findall(r"^\s+(\w+)=([0-9.]+)\s*$", summary, re.M))
    assert set(values) == {"pairs_per_s_per_gpu", "loader_pairs_per_s_cpu_1_workers"}, summary
    assert all(float(v) > 0 for v in values.values()), values
    for key, value in values.items():
        assert f"GPU_CHECK {key}={value}" in out.stdout  # the stage's own line
    assert re.search(r"^\s+3 steps in [0-9.]+ s: [0-9.]+ pairs/s per GPU", out.stdout, re.M), out.stdout[-2000:]
    assert not list(tmp_path.glob("siamtool-gpu-check.*")), "the work folder is removed"
