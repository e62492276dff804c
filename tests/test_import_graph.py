"""No import cycle inside `harness/`, counting imports in functions and `TYPE_CHECKING` blocks.

The graph is read from the source with `ast`, so a cycle hidden behind a function-local import (which
Python tolerates until the day the call order changes) counts. `KNOWN_CYCLES` lists the cycles we still
have; it may only shrink: a new cycle fails, and so does an entry whose cycle is gone. Function-local
imports are kept for heavy optional dependencies: a module of `HEAVY_MODULES`, or a harness module whose
import loads one (deferring `harness.tuning` defers Ray Tune); `KNOWN_LOCAL_IMPORTS` lists any other left.

An edge is what a statement names: `from harness.x import y` is harness.x.y when that is a module, else
harness.x. The parent packages Python also runs first are not edges: a package whose `__init__` re-exports
its modules would otherwise form a cycle with each of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each entry is one strongly connected component of today's graph. Remove an entry when your change
# breaks the cycle (shrink it when the cycle loses members); never add one.
KNOWN_CYCLES: list[frozenset[str]] = []

# Slow to import or not needed by every entry point: these may be imported inside a function.
HEAVY_MODULES = frozenset(
    {
        "torch", "torchvision", "torchattacks", "torchmetrics", "ray", "sklearn", "scipy", "optuna",
        "plotly", "pandas", "pyarrow", "playwright",
        "methods", "dashboards",  # plugin discovery and rendering: harness must not import them at load
    }
)  # fmt: skip

# Function-local imports of anything else (harness's own modules above all), importer -> imported.
# They exist to dodge cycles or to keep Ray/torch off the import path of light modules; move each to
# the top of its module when you can and delete its entry. A new one fails, and so does a stale entry.
KNOWN_LOCAL_IMPORTS: dict[str, frozenset[str]] = {}


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's `__init__.py` is the package itself."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path, tree: ast.AST) -> Iterator[tuple[ast.stmt, list[str]]]:
    """Each import statement anywhere in the tree with the dotted names it may load, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            yield node, [f"{base}.{alias.name}" for alias in node.names] + [base]


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name loads: `harness.x.y` if that is a module, else the nearest one above."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name if name in modules else None


def statement_targets(node: ast.stmt, names: list[str], modules: dict[str, Path]) -> set[str]:
    """The package's modules one import statement loads: for `from x import y`, x.y if a module, else x."""
    if isinstance(node, ast.ImportFrom) and resolve(names[-1], modules) is not None:
        names = [name for name in names[:-1] if name in modules] or names[-1:]
    return {target for target in (resolve(name, modules) for name in names) if target}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, from every import statement in its source."""
    modules = package_modules(package_dir)
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for node, names in imported_names(module, path, ast.parse(path.read_text(), str(path))):
            graph[module] |= statement_targets(node, names, modules) - {module}
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm: the graph's strongly connected components, each as a set of nodes."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            components.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def import_cycles(package_dir: Path) -> list[frozenset[str]]:
    """Groups of modules that import each other, directly or round a loop."""
    return [c for c in strongly_connected_components(import_graph(package_dir)) if len(c) > 1]


def function_local_imports(package_dir: Path) -> dict[str, set[str]]:
    """Module -> what it imports inside function bodies (the package's modules, or top-level names)."""
    modules = package_modules(package_dir)
    found: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node, names in imported_names(module, path, function):
                outside = names if isinstance(node, ast.Import) else names[-1:]
                local = statement_targets(node, names, modules) | {
                    name.split(".")[0] for name in outside if resolve(name, modules) is None
                }
                found.setdefault(module, set()).update(local)
    return found


def top_level_statements(tree: ast.AST) -> Iterator[ast.stmt]:
    """The import statements that run when the module is imported: not in a function, not under TYPE_CHECKING."""
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def heavy_at_import(package_dir: Path) -> set[str]:
    """The package's modules whose import loads a HEAVY_MODULES dependency, directly or through another."""
    modules = package_modules(package_dir)
    direct: dict[str, set[str]] = {}
    heavy: set[str] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        top = set(top_level_statements(tree))
        direct[module] = set()
        for node, names in imported_names(module, path, tree):
            if node not in top:
                continue
            direct[module] |= statement_targets(node, names, modules) - {module}
            outside = names if isinstance(node, ast.Import) else names[-1:]
            if any(resolve(n, modules) is None and n.split(".")[0] in HEAVY_MODULES for n in outside):
                heavy.add(module)
    changed = True
    while changed:  # a module is heavy when anything it imports at load is
        grown = {m for m, targets in direct.items() if targets & heavy} - heavy
        heavy |= grown
        changed = bool(grown)
    return heavy


def describe(cycle: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(cycle)) + "}"


def test_harness_has_no_new_import_cycle() -> None:
    new = [cycle for cycle in import_cycles(ROOT / "harness") if cycle not in KNOWN_CYCLES]
    assert not new, (
        "import cycles inside harness/ (counting imports inside functions and TYPE_CHECKING blocks): "
        + "; ".join(describe(c) for c in new)
        + ". Break the cycle (move the shared idea to a module both can import); if an existing "
        "KNOWN_CYCLES entry shrank, replace it with the smaller set shown here"
    )


def test_known_cycles_still_exist() -> None:
    cycles = import_cycles(ROOT / "harness")
    gone = [cycle for cycle in KNOWN_CYCLES if cycle not in cycles]
    assert not gone, (
        "KNOWN_CYCLES lists cycles that no longer exist (well done): delete or shrink these entries in "
        f"tests/test_import_graph.py: {'; '.join(describe(c) for c in gone)}. Cycles today: "
        + ("; ".join(describe(c) for c in cycles) or "none")
    )


def light_local_imports(package_dir: Path) -> dict[str, set[str]]:
    """Function-local imports of what is cheap to import: neither a heavy dependency nor a module of the
    package whose import loads one (a local import of `harness.tuning` defers Ray Tune: allowed)."""
    heavy = heavy_at_import(package_dir)
    return {module: {n for n in names if n.split(".")[0] not in HEAVY_MODULES and n not in heavy}
            for module, names in function_local_imports(package_dir).items()}


def test_function_local_imports_are_heavy_or_known() -> None:
    unexpected = {module: sorted(names) for module, names in light_local_imports(ROOT / "harness").items()}
    unexpected = {
        module: [name for name in names if name not in KNOWN_LOCAL_IMPORTS.get(module, ())]
        for module, names in unexpected.items()
    }
    unexpected = {module: names for module, names in unexpected.items() if names}
    assert not unexpected, (
        f"new function-local imports {unexpected}: import at the top of the module; function-local "
        "imports are for heavy optional dependencies (HEAVY_MODULES), never to dodge an import cycle"
    )


def test_known_local_imports_are_still_there() -> None:
    found = light_local_imports(ROOT / "harness")
    gone = {module: sorted(names - found.get(module, set())) for module, names in KNOWN_LOCAL_IMPORTS.items()}
    gone = {module: names for module, names in gone.items() if names}
    assert not gone, f"these function-local imports are gone (well done): delete them from KNOWN_LOCAL_IMPORTS: {gone}"


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "toy"


def test_cycle_through_a_function_local_import_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/a.py": "from toy.b import helper\n",
            "toy/b.py": "def helper():\n    from . import a\n    return a\n",
            "toy/c.py": "import toy.a\n",
        },
    )
    assert import_cycles(package) == [frozenset({"toy.a", "toy.b"})]
    assert function_local_imports(package) == {"toy.b": {"toy.a"}}


def test_type_checking_imports_and_package_inits_count(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "toy/__init__.py": "from toy.sub import thing\n",
            "toy/sub/__init__.py": "from .leaf import thing\n",
            "toy/sub/leaf.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..other import Model\nthing = 1\n"
            ),
            "toy/other.py": "from toy import sub\n",
        },
    )
    graph = import_graph(package)
    assert graph["toy"] == {"toy.sub"}  # `thing` is a name in toy.sub, not a module
    assert graph["toy.sub"] == {"toy.sub.leaf"}
    assert graph["toy.sub.leaf"] == {"toy.other"}  # typing is outside the package
    assert graph["toy.other"] == {"toy.sub"}  # `from toy import sub`: the module sub, not toy
    assert import_cycles(package) == [frozenset({"toy.sub", "toy.sub.leaf", "toy.other"})]


def test_tarjan_finds_each_component_once() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    components = strongly_connected_components(graph)
    assert sorted(map(sorted, components)) == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_a_local_import_may_defer_a_module_that_loads_a_heavy_dependency_only(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/gpu.py": "import torch\n",
            "toy/wrapper.py": "from toy import gpu\n",  # heavy through gpu
            "toy/light.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
            "toy/user.py": "def run():\n    from toy import wrapper, light\n    return wrapper, light\n",
        },
    )
    assert heavy_at_import(package) == {"toy.gpu", "toy.wrapper"}  # a TYPE_CHECKING import never runs
    assert light_local_imports(package) == {"toy.user": {"toy.light"}}
