"""Without their optional extras, the toolkit integrations fail in one line that says what to install."""

from __future__ import annotations

import importlib
import sys

import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.errors import SiamtoolError


def test_siamtool_vot_without_vot_trax(monkeypatch):
    monkeypatch.setitem(sys.modules, "trax", None)  # `import trax` raises ImportError
    r = CliRunner().invoke(app, ["vot"])
    assert r.exit_code == 2, r.output
    assert "error: siamtool vot needs the TraX protocol library: pip install vot-trax" in r.output
    assert "Traceback" not in r.output


def test_the_got10k_adapter_without_got10k(monkeypatch):
    monkeypatch.setitem(sys.modules, "got10k", None)
    monkeypatch.setitem(sys.modules, "got10k.trackers", None)
    monkeypatch.delitem(sys.modules, "siamtool.integrations.got10k", raising=False)
    with pytest.raises(SiamtoolError, match="pip install got10k six"):
        importlib.import_module("siamtool.integrations.got10k")
