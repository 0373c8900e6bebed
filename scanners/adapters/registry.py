from __future__ import annotations

from typing import Any

from scanners.adapters.base import ScannerAdapter
from scanners.adapters.nessus import NessusAdapter
from scanners.models import Scanner, ScannerKind


def get_adapter(scanner: Scanner, **options: Any) -> ScannerAdapter:
    """The adapter for ``scanner``'s kind, configured from its row (URL, credentials, TLS); ``options`` go to
    the adapter (e.g. ``retries=0``: the engine's steps leave retries to RQ)."""
    if scanner.kind == ScannerKind.NESSUS:
        return NessusAdapter.from_scanner(scanner, **options)
    raise ValueError(f"no adapter for scanner kind {scanner.kind!r}")
