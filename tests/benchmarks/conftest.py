"""Benchmarks live in ``bench_*.py`` files: collect them (pytest only collects ``test_*.py`` by default)."""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
