"""Provenance: "was this made from the same inputs with the same settings?", answered in one place.

Every artefact siamtool resumes or reuses records what made it: shards (`data.prepare`), training runs
(`engine.trainer`), the feature cache (`data.feature_cache`), tracker results (`eval.runner`), ONNX
exports and their cache (`onnx_format`, `tracking.cache`). Each compares what it recorded with what it
would make now and refuses, with a line naming what changed, instead of silently mixing the two. This
module holds the hashing and the comparison they share, so that two artefacts never disagree on what
"the same" means:

* `file_digest`: sha256 over the bytes of one or more files (checkpoints, ONNX graphs, shard indexes);
* `state_digest`: sha256 over the tensors of a state dict (names and raw bytes, any dtype);
* `fingerprint`: sha256 of a JSON-able value in canonical form (sorted keys);
* `differences`: what changed between two recorded settings, as `Difference`s that print as one line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_digest(paths: str | Path | Iterable[str | Path], length: int | None = None) -> str:
    """sha256 hex of the bytes of `paths` (one file, or several in the given order), cut to `length`."""
    h = hashlib.sha256()
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
    return h.hexdigest()[:length]


def state_digest(state: Mapping[str, Any]) -> str:
    """sha256 hex over a state dict's tensors, sorted by name: name, then the tensor's raw bytes.

    Raw bytes (a uint8 view) rather than values, so bfloat16 and other dtypes numpy lacks hash too.
    """
    import torch  # here, not at the top: the export cache hashes files on the torch-free ONNX load path

    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def text_digest(text: str, length: int | None = None) -> str:
    """sha256 hex of a string (UTF-8), cut to `length`: keys made of other digests and versions."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fingerprint(value: Any, length: int | None = 16) -> str:
    """sha256 hex of `value` as canonical JSON (sorted keys; non-JSON values as their str)."""
    return text_digest(json.dumps(value, sort_keys=True, default=str), length)


@dataclass(frozen=True)
class Difference:
    """One recorded setting that differs: `key` is the dotted path, `old` the recorded value, `new` today's."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        if isinstance(self.old, list) and isinstance(self.new, list):
            return f"{self.key}: {len(self.old)} -> {len(self.new)} entries"
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def differences(old: Mapping[str, Any], new: Mapping[str, Any], *, depth: int | None = None,
                sort: bool = True, prefix: str = "") -> list[Difference]:
    """Every key whose value differs between `old` (what was recorded) and `new` (what would be made now).

    Nested mappings are compared key by key down to `depth` levels (None: all the way), so a changed
    crop size reads ``data.search_size`` rather than ``data``. `sort=False` keeps the keys in the order
    `new` lists them (then keys only `old` has), for messages that follow a record's own order.
    """
    keys = list(new) + [k for k in old if k not in new]
    out: list[Difference] = []
    for k in sorted(keys) if sort else keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping) and (depth is None or depth > 1):
            out += differences(a, b, depth=None if depth is None else depth - 1, sort=sort, prefix=f"{prefix}{k}.")
        elif a != b:
            out.append(Difference(f"{prefix}{k}", a, b))
    return out
