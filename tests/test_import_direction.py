"""Imports run one way (DESIGN §8): ``scanpool_site`` ← ``pools`` ← ``scanners`` ← ``tasks``. A module of an app
never imports a higher app, at module level or inside a function (a function-level import is how a cycle
hides). Read from the source with ``ast``: nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK = {"scanpool_site": 0, "pools": 1, "scanners": 2, "tasks": 3}
# Known exceptions still to move: none. (The last one, the Pool admin's live load columns, is registered from
# tasks/admin/pools.py since; a new entry here must be listed in docs/architecture.md "Still to do".)
KNOWN: set[tuple[str, str]] = set()


def upward_imports(root: Path = ROOT) -> list[str]:
    found = []
    for app, rank in RANK.items():
        for path in sorted((root / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if RANK.get(top, -1) > rank and (rel, top) not in KNOWN:
                        found.append(f"{rel}:{node.lineno} imports {name} ({app} may not import {top})")
    return found


def test_no_app_imports_a_higher_one():
    assert upward_imports() == []


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for app in RANK:
        for path in sorted((root / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    return {id(inner) for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)}


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """Module → the project modules it imports at module level (``if TYPE_CHECKING`` left out), and every import
    of a project module placed inside a function other than an ``AppConfig.ready()`` (Django's place for
    registering signals once the apps are loaded)."""
    modules = _modules(root)

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    inside: list[str] = []
    for name, path in modules.items():
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        skipped = _type_checking_nodes(tree)
        in_function: dict[int, str] = {}
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(func):
                    in_function.setdefault(id(node), func.name)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from pkg import mod`` imports the submodule when there is one.
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                           else node.module for alias in node.names]
            else:
                continue
            for target in {owner(t) for t in targets} - {None, name}:
                if id(node) in in_function:
                    if in_function[id(node)] != "ready":
                        inside.append(f"{rel}:{node.lineno} imports {target} inside {in_function[id(node)]}()")
                elif not name.startswith(f"{target}."):  # a package's own __init__ runs first anyway
                    graph[name].add(target)
    return graph, inside


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_and_no_import_hidden_in_a_function():
    """No module imports another that imports it back, and no project import hides in a function (that is how a
    cycle dodges Python's import: the engine's 12-file cycle was held together by 41 of them)."""
    graph, inside = import_graph()
    assert inside == []
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    for app in RANK:
        (tmp_path / app).mkdir()
    (tmp_path / "tasks" / "a.py").write_text("from tasks import b\n")
    (tmp_path / "tasks" / "b.py").write_text("def f():\n    from tasks.a import x\n")
    (tmp_path / "tasks" / "apps.py").write_text("class C:\n    def ready(self):\n        from tasks import a\n")
    graph, inside = import_graph(tmp_path)
    assert inside == ["tasks/b.py:2 imports tasks.a inside f()"] and cycles(graph) == []
    (tmp_path / "tasks" / "b.py").write_text("from tasks.a import x\n")
    assert cycles(import_graph(tmp_path)[0]) == [["tasks.a", "tasks.b"]]


def test_the_check_sees_function_level_imports(tmp_path):
    for app in RANK:
        (tmp_path / app).mkdir()
    (tmp_path / "scanners" / "bad.py").write_text("def f():\n    from tasks.models import ScanTask\n")
    (tmp_path / "pools" / "worse.py").write_text("import scanners.models\n")
    assert upward_imports(tmp_path) == [
        "pools/worse.py:1 imports scanners.models (pools may not import scanners)",
        "scanners/bad.py:2 imports tasks.models (scanners may not import tasks)",
    ]


def test_the_pool_admin_keeps_its_load_columns_registered_from_tasks():
    # The Pool page lost no column when it moved out of pools/admin.py: the registered admin is the tasks one.
    from django.contrib import admin

    from pools.models import Pool
    from tasks.admin.pools import PoolAdmin, ScannerInline

    registered = admin.site._registry[Pool]
    assert type(registered) is PoolAdmin
    assert {"capacity_display", "active_display", "utilisation_display", "queued_display"} <= set(
        registered.list_display
    )
    assert ScannerInline in registered.inlines
