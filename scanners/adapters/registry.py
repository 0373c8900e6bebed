from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanners.adapters.base import ScannerAdapter
    from scanners.models import Scanner


def get_adapter(scanner: Scanner, **options: Any) -> ScannerAdapter:
    """The adapter for ``scanner``'s kind, configured from its row (URL, credentials, TLS); ``options`` go to
    the adapter (e.g. ``retries=0``: the engine's steps leave retries to RQ)."""
    from scanners.models import ScannerKind

    if scanner.kind == ScannerKind.NESSUS:
        from scanners.adapters.nessus import NessusAdapter

        return NessusAdapter.from_scanner(scanner, **options)
    raise ValueError(f"no adapter for scanner kind {scanner.kind!r}")
