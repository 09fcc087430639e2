"""Pick the torch device: CUDA when present (or asked for), else CPU; a clear error for a bad request."""

from __future__ import annotations

import os

import torch

from siamtool.errors import SiamtoolError


def resolve_device(name: str = "auto", what: str = "--device") -> torch.device:
    """`name` (auto, cpu, cuda, cuda:N) as a torch.device; `what` names the option in the one-line error."""
    name = str(name)  # a torch.device works too
    shown = f"{what}{name!r}" if what.endswith("=") else f"{what} {name}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SiamtoolError(f"{shown}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SiamtoolError(f"{shown}: CUDA is not available here; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SiamtoolError(f"{shown}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise SiamtoolError(f"{shown}: expected auto, cpu, cuda or cuda:N")
    return dev


def available_cores() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
