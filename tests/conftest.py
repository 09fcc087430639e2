"""Shared fixtures: a tiny synthetic LaSOT-layout dataset, paths to the shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamtool.data.synthetic import make_synthetic_lasot

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped where the shared data is not checked out."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not present: {p}")
    return p


@pytest.fixture(scope="session")
def synthetic_lasot(tmp_path_factory) -> Path:
    """cat-1, cat-2, dog-1, dog-2: 40 frames of 192x144, with occlusion and out-of-view frames."""
    return make_synthetic_lasot(tmp_path_factory.mktemp("lasot"))
