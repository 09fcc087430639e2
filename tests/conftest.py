"""Shared fixtures: a tiny synthetic LaSOT-layout dataset, paths to the shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamtool.data.synthetic import make_synthetic_lasot

pytest_plugins = ["tests.onnx_fixtures"]
"""The tiny-checkpoint and export fixtures shared by tests/export and tests/tracking (one session each)."""

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def benchmark_module(name: str):
    """benchmarks/NAME.py imported as a module (benchmarks/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def tiny_config(*overrides: str, backbone: str = "dinov3_vits16"):
    """A Config for a tiny random model that runs in milliseconds on CPU (tests of every stage).

    Template 32 px (2x2 tokens), search 64 px (4x4 tokens), a 32-wide neck; `overrides` are `--set`
    strings applied last, e.g. tiny_config("train.batch_size=4").
    """
    from siamtool.config import load_config

    base = [f"model.backbone={backbone}", "model.tiny=true", "model.pretrained=false", "model.dim=32",
            "model.heads=2", "model.dropout=0.0", "data.template_size=32", "data.search_size=64"]
    return load_config(None, [*base, *overrides])


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_lasot, tmp_path_factory) -> Path:
    """Shards of `synthetic_lasot` at tiny_config's crop sizes: 4 sequences x 32 pairs, 8 shards of 16."""
    from siamtool.data.prepare import prepare_shards

    out = tmp_path_factory.mktemp("shards")
    prepare_shards(synthetic_lasot, out, tiny_config("data.pairs_per_sequence=32", "data.pairs_per_shard=16"),
                   split="all", workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of an untrained tiny_config() model (random weights: for plumbing tests only)."""
    from siamtool.engine.checkpoint import save_checkpoint
    from siamtool.models import build_model

    cfg = tiny_config()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-run" / "tiny.pt"
    save_checkpoint(path, build_model(cfg), cfg)
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_siamtool_cache(tmp_path_factory):
    """Keep the ONNX exports that `--checkpoint` on CPU caches (siamtool.tracking.cache) out of ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIAMTOOL_CACHE", str(tmp_path_factory.mktemp("siamtool-cache")))
        yield


@pytest.fixture(autouse=True)
def empty_working_folder(tmp_path_factory, monkeypatch) -> Path:
    """Run every test in an empty folder with no $SIAMTOOL_LASOT.

    Commands look for ./shards (the LaSOT root prepare recorded) and ./runs (the newest trained
    checkpoint) when not told (`siamtool.workspace`); the repository's own shards/ or runs/ must not
    change what a test sees, and default outputs (results/, siamtool-demo/) must not land in the repo.
    """
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("SIAMTOOL_LASOT", raising=False)
    return folder


@pytest.fixture(autouse=True)
def no_shipped_model(tmp_path_factory, monkeypatch):
    """Hide the shipped default checkpoint (siamtool.weights) from every test unless it asks for it.

    Tests stay fast and hermetic whether or not siamtool/weights/lite0_default.pt is present: a command
    run without --checkpoint sees a missing default, or the tiny one a test points DEFAULT_CHECKPOINT at.
    The real file is tested through the `shipped_checkpoint` fixture.
    """
    import siamtool.weights

    monkeypatch.setattr(siamtool.weights, "DEFAULT_CHECKPOINT", tmp_path_factory.getbasetemp() / "no-default.pt")


@pytest.fixture
def shipped_checkpoint(monkeypatch) -> Path:
    """The real shipped default checkpoint, made the default again; skipped where it is not installed."""
    import siamtool.weights

    real = Path(siamtool.weights.__file__).resolve().with_name(siamtool.weights.DEFAULT_NAME)
    if not real.is_file():
        pytest.skip(f"no shipped default checkpoint at {real}")
    monkeypatch.setattr(siamtool.weights, "DEFAULT_CHECKPOINT", real)
    return real


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite: on a busy 2-core CI box OpenMP threads spin against each
    other (eager PyTorch ran 4-50x slower at 2 threads under load); no test measures speed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None):
    """Run `python -m siamtool ARGS` in a fresh process, as a user would (DataLoader workers, real
    stderr, Python's own warning printing), with this checkout first on the path. Returns the
    CompletedProcess with `.output` = stdout + stderr."""
    import os
    import subprocess
    import sys

    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    full_env.setdefault("COLUMNS", "200")
    r = subprocess.run([sys.executable, "-m", "siamtool", *args], capture_output=True, text=True, timeout=timeout,
                       env=full_env, cwd=cwd)
    r.output = r.stdout + r.stderr
    return r


def output_lines(text: str) -> list[str]:
    """The non-empty lines a command printed."""
    return [line for line in text.splitlines() if line.strip()]


class Recorder:
    """A `siamtool.reporting.Reporter` that keeps what it is told: `lines` (statuses and warnings, as the CLI
    would print their text) and `progress` ((task, completed, total) after every progress call)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress_calls: list[tuple[str, int, int | None]] = []
        self._done: dict[str, int] = {}
        self._total: dict[str, int | None] = {}

    def status(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str, label: str | None = "warning") -> None:
        self.lines.append(f"{label}: {text}" if label else text)

    def progress(self, task: str, *, advance: int = 0, completed: int | None = None, total: int | None = None,
                 detail: str | None = None) -> None:
        self._done[task] = (self._done.get(task, 0) if completed is None else completed) + advance
        if total is not None:
            self._total[task] = total
        self.progress_calls.append((task, self._done[task], self._total.get(task)))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
