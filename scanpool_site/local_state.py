"""Development state under ``var/`` that other local users must not read.

A development install (``DJANGO_DEBUG=1`` without ``DJANGO_SECRET_KEY`` / ``SCANPOOL_SECRET_KEYS``) gets a
random Django secret key and a random Fernet key, generated on first use into ``var/`` (mode 0600, in a
directory of mode 0700), instead of a key anybody can read in the source. The SQLite database and its
``-wal``/``-shm`` files are kept at 0600 too. Settings call these helpers before Django is set up, so
they use only the standard library, ``cryptography`` for the Fernet key and Django's exception type.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700; tighten an existing one we own that others can read."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(DIR_MODE)
    return path


def read_or_create_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret stored in ``path``; created (0600) with ``generate()`` when missing.

    Several processes may start at once (web, workers, tests): the value is written to a private temporary
    file and hard-linked into place, so every process ends up reading the same complete value.
    """
    ensure_private_dir(path.parent)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(generate() + "\n")
            try:
                os.link(tmp, path)  # fails if another process won the race: keep its value
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    protect_file(path)
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(f"{path} is empty: delete it to generate a new value")
    return value


def protect_file(path: Path) -> None:
    """chmod 0600 a file we own that group or others can read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(FILE_MODE)


def protect_sqlite(db_path: Path) -> None:
    """Create the SQLite file 0600 if missing (SQLite gives its -wal/-shm files the database file's mode)
    and tighten the database and its -wal/-shm files when they already exist with wider modes."""
    if str(db_path) in {"", ":memory:"} or str(db_path).startswith("file:"):
        return
    if not db_path.exists() and db_path.parent.is_dir():
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        protect_file(Path(f"{db_path}{suffix}"))


def generate_django_secret_key() -> str:
    return secrets.token_urlsafe(50)


def generate_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
