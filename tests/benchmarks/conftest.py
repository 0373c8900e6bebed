"""Benchmarks live in ``bench_*.py`` files: collect them (pytest only collects ``test_*.py`` by default)."""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    # A file named on the command line is collected by pytest's own python plugin already: collecting it here
    # too would run every benchmark in it twice.
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
