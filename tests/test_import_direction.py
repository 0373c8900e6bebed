"""Imports run one way (DESIGN §8): ``scanpool_site`` ← ``pools`` ← ``scanners`` ← ``tasks``. A module of an app
never imports a higher app, at module level or inside a function (a function-level import is how a cycle
hides). Read from the source with ``ast``: nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK = {"scanpool_site": 0, "pools": 1, "scanners": 2, "tasks": 3}
# Known, documented exceptions still to move (docs/architecture.md "Still to do"): the Pool admin page shows
# live load (scanners' slots, queued tasks), so it reads the higher apps.
KNOWN = {("pools/admin.py", "scanners"), ("pools/admin.py", "tasks")}


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
