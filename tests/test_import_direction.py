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
