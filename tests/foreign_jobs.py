"""Functions that are NOT scanpool jobs, for the worker's job allow-list tests: each leaves a marker file
when it runs, so a test can prove it never did."""

from __future__ import annotations

from pathlib import Path


def write_marker(path: str) -> str:
    Path(path).write_text("ran")
    return path


def write_marker_callback(job, connection, *args) -> None:
    """A success/failure callback: writes the marker named in the job's meta."""
    Path(job.meta["marker"]).write_text("callback ran")
