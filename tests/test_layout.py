"""The package's shape, as the README's layout section documents it: layers, no cycles, no printing, short functions.

Every module under siamtool/ is parsed (not imported), and every import in it counts, at module level
or inside a function: a function-level import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "siamtool"

LAYERS: list[tuple[str, ...]] = [
    ("siamtool", "errors", "fileio", "device", "provenance", "reporting", "pool", "config", "geometry", "images",
     "weights", "onnx_format", "checkpoint_files"),
    ("models",),
    ("data",),
    ("export",),
    ("tracking",),
    ("engine", "eval"),
    ("app", "workspace", "api"),
    ("integrations",),
    ("cli", "cli_render", "__main__"),
]
"""Units (a subpackage or a top-level module) from the bottom up, as in the README's layout section. A
unit imports only units of lower layers; the foundation's single-file modules and the CLI's modules may
also import each other (without cycles)."""
SHARED_LAYERS = (0, len(LAYERS) - 1)
FACADE = {("siamtool", "api")}
"""The one allowed upward import: the package's top level re-exports the Python API (`siamtool.load_tracker`)
inside a function, so ``import siamtool`` stays cheap; no siamtool module calls it."""
RENDERING = {"cli", "cli_render"}
"""The only modules that may import rich: the library reports through `siamtool.reporting`."""
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Every module `module` imports, anywhere in its body (relative imports resolved)."""
    names = set()
    package = module if module in MODULES and (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists() \
        else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
    return names


def _unit_graph() -> dict[str, dict[str, set[str]]]:
    """{unit: {unit it imports: the modules that do}}, siamtool units only, self-imports left out."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for module, tree in MODULES.items():
        for name in _imports(module, tree):
            if name == "siamtool" or name.startswith("siamtool."):
                src, dst = _unit(module), _unit(name)
                if src != dst and (src, dst) not in FACADE:
                    graph[src][dst].add(module)
    return graph


RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_unit_has_a_layer():
    assert sorted({_unit(m) for m in MODULES} - set(RANK)) == []


def test_no_two_units_import_each_other():
    graph = _unit_graph()
    mutual = sorted(f"{a} <-> {b} ({', '.join(sorted(graph[a][b]))})" for a in graph for b in graph[a]
                    if a < b and a in graph.get(b, {}))
    assert mutual == []


def test_no_import_cycle_between_units():
    graph = _unit_graph()
    state: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, {})):
            if state.get(nxt) == 1:
                return [*path, unit, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, unit])):
                return cycle
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state:
            assert visit(unit, []) is None


def test_imports_follow_the_layer_order():
    upward = []
    for src, targets in _unit_graph().items():
        for dst, modules in targets.items():
            same_shared = RANK[src] == RANK[dst] and RANK[src] in SHARED_LAYERS
            if RANK[dst] > RANK[src] or (RANK[dst] == RANK[src] and not same_shared):
                upward.append(f"{src} (layer {RANK[src]}) imports {dst} (layer {RANK[dst]}): "
                              f"{', '.join(sorted(modules))}")
    assert sorted(upward) == []


def test_only_the_cli_renders_with_rich():
    users = sorted(m for m, tree in MODULES.items() if _unit(m) not in RENDERING
                   and any(n == "rich" or n.startswith("rich.") for n in _imports(m, tree)))
    assert users == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_are_short(module):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(MODULES[module]) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_the_facade_is_only_the_package_top_level():
    """`FACADE` exempts exactly siamtool/__init__.py's lazy import of the API, nothing else."""
    users = sorted(m for m, tree in MODULES.items() if _unit(m) == "siamtool"
                   and any(_unit(n) == "api" for n in _imports(m, tree) if n.startswith("siamtool.")))
    assert users == ["siamtool"]
