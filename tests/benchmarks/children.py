"""How a benchmark starts its child processes (ingest runs, workers): with production settings.

The test run itself is a development install (``DJANGO_DEBUG=1``, tests/settings.py), and children inherit its
environment. A production process runs with ``DJANGO_DEBUG=0``: no debug cursor recording every statement, no
debug-only checks. The children get that, with this run's keys, so they read what the test process wrote
(encrypted scanner passwords, sessions)."""

from __future__ import annotations

from django.conf import settings


def production_env() -> dict[str, str]:
    return {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "SCANPOOL_SECRET_KEYS": ",".join(settings.SCANPOOL_SECRET_KEYS)}
