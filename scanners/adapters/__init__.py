"""Scanner adapters: one module per scanner kind behind :class:`scanners.adapters.base.ScannerAdapter`."""

from scanners.adapters.base import (
    HealthReport,
    LaunchedScan,
    PermanentScannerError,
    RemoteScan,
    ResultsTooLargeError,
    ScannerAdapter,
    ScannerError,
    ScanSpec,
    ScanState,
    TransientScannerError,
)
from scanners.adapters.registry import get_adapter

__all__ = [
    "HealthReport",
    "LaunchedScan",
    "PermanentScannerError",
    "RemoteScan",
    "ResultsTooLargeError",
    "ScanSpec",
    "ScanState",
    "ScannerAdapter",
    "ScannerError",
    "TransientScannerError",
    "get_adapter",
]
