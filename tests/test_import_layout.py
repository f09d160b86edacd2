"""The package's layout holds: no module imports itself round a circle, and the root holds only rooms.

Every `import` statement under truth_forge counts, at module level, inside functions and under
`TYPE_CHECKING` alike: a circle hidden behind a function-level import is still a circle a reader has
to hold in their head, and it breaks as soon as someone moves the import up.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import truth_forge

PACKAGE = "truth_forge"
ROOT = Path(truth_forge.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module under truth_forge, by dotted name, with its source file (a package is its __init__)."""
    found = {PACKAGE: ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix=f"{PACKAGE}."):
        relative = info.name.split(".")[1:]
        path = ROOT.joinpath(*relative)
        found[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return found


def _imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """The dotted names a module's import statements ask for, relative ones made absolute."""
    is_package = path.name == "__init__.py"
    package_parts = name.split(".") if is_package else name.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # `from package import module` asks for the module; `from module import name`, the module.
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return names


def import_graph() -> dict[str, set[str]]:
    """truth_forge's modules, each with the truth_forge modules it imports. A package's `__init__` that
    Python runs on the way to one of its submodules is not an edge: only what a statement names is."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {imported for imported in _imported_names(name, path, set(modules)) if imported in modules}
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as the list of modules round it (first repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        colour[start] = grey
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = black
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop(0)
            if colour[nxt] == grey:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_find_cycle_reports_a_circle_and_passes_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("from . import sibling\nfrom ..other import thing\n\ndef f():\n    from .deep import x\n")
    names = _imported_names("pkg.sub.mod", module, {"pkg.sub.sibling"})
    assert names == {"pkg.sub.sibling", "pkg.other", "pkg.sub.deep"}


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the walk missed the package's modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_package_root_holds_only_init_main_and_packages() -> None:
    loose = sorted(
        info.name
        for info in pkgutil.iter_modules([str(ROOT)])
        if not info.ispkg and info.name not in {"__init__", "__main__"}
    )
    assert loose == [], f"modules loose in truth_forge/: {loose}"
