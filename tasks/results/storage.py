"""Raw ``.nessus`` files under ``settings.SCANPOOL_RESULTS_DIR``, one per task: ``<task id>.nessus``."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    sha256: str


def results_dir() -> Path:
    return Path(settings.SCANPOOL_RESULTS_DIR)


def results_path(task_id: uuid.UUID | str) -> Path:
    """Where the raw export of a task lives (whether or not it exists yet)."""
    return results_dir() / f"{uuid.UUID(str(task_id))}.nessus"


def hash_file(path: Path) -> StoredFile:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return StoredFile(path, size, digest.hexdigest())


def store_results_file(task_id: uuid.UUID | str, source: Path, *, move: bool = False) -> StoredFile:
    """Put ``source`` at :func:`results_path` atomically (copy, or rename with ``move=True``); hash it."""
    source = Path(source)
    target = results_path(task_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() == target.resolve():
        return hash_file(target)
    if move:
        try:
            os.replace(source, target)
            return hash_file(target)
        except OSError:
            pass  # another filesystem: copy, then remove the source
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if move:
        source.unlink(missing_ok=True)
    return StoredFile(target, size, digest.hexdigest())


def delete_results_file(task_id: uuid.UUID | str) -> bool:
    """Remove a task's raw export; True when a file was there."""
    path = results_path(task_id)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


__all__ = ["StoredFile", "delete_results_file", "hash_file", "results_dir", "results_path",
           "store_results_file"]
