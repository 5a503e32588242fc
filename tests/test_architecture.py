"""The house stays one-way: no import cycles, the framework never imports the pass library, no huge files.

The import graph is read from the source (every ``import`` statement, function-level ones
included), with ``passes/`` and ``models/`` mapped to ``onnxq.passes`` / ``onnxq.models`` as
setuptools installs them. ``from pkg import name`` counts as importing ``pkg.name`` when that is
a module, else ``pkg`` (the convention of grimp / import-linter).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"onnxq": ROOT / "onnxq", "onnxq.passes": ROOT / "passes", "onnxq.models": ROOT / "models"}
LIBRARY = ("onnxq.passes", "onnxq.models")
APPLICATION = ("onnxq.api", "onnxq.cli")
#: The package root re-exports the application layer (importing it registers the passes).
ROOT_MODULE = "onnxq"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _nearest(target: str, modules: dict[str, Path]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    """Module → the onnxq modules it imports."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                hit = _nearest(t, modules)
                if hit is not None and hit != module:
                    edges[module].add(hit)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                out.append(sorted(component))
    return out


def _is(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def violations(
    edges: dict[str, set[str]], importers: tuple[str, ...] | None, forbidden: tuple[str, ...], *, exempt: tuple[str, ...] = (), exact: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """(importer, target) edges from ``importers`` (None: every module outside ``forbidden`` and not
    ``exempt``) into the ``forbidden`` layers or onto the ``exact`` modules."""
    return sorted(
        (m, t)
        for m, targets in edges.items()
        if m not in exempt and (_is(m, importers) if importers is not None else not _is(m, forbidden))
        for t in targets
        if _is(t, forbidden) or t in exact
    )


def test_no_import_cycles() -> None:
    cycles = [c for c in strongly_connected(import_graph()) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_framework_never_imports_library_or_application() -> None:
    bad = violations(import_graph(), None, LIBRARY + APPLICATION, exempt=(ROOT_MODULE,))
    assert bad == [], f"framework → library/application imports: {bad}"


def test_library_never_imports_application_or_the_root() -> None:
    bad = violations(import_graph(), ("onnxq.passes",), APPLICATION, exact=(ROOT_MODULE,))
    assert bad == [], f"library → application imports: {bad}"


def test_the_checks_see_a_cycle_and_a_layer_violation() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert [c for c in strongly_connected(edges) if len(c) > 1] == [["a", "b", "c"]]
    layered = {"onnxq.pass_base": {"onnxq.passes.cleanup"}, "onnxq.api": {"onnxq.passes"}, "onnxq.passes.x": {"onnxq.api"}}
    assert violations(layered, None, LIBRARY + APPLICATION) == [("onnxq.pass_base", "onnxq.passes.cleanup")]
    assert violations(layered, ("onnxq.passes",), APPLICATION) == [("onnxq.passes.x", "onnxq.api")]


@pytest.mark.parametrize("folder", ["onnxq", "passes", "models", "benchmarks"])
def test_no_file_over_600_lines(folder: str) -> None:
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert big == {}, f"files over 600 lines (split them by concern): {big}"
