"""Tenable Nessus adapter (``client``: HTTP, auth, retries, errors; ``payloads``: scan bodies;
``adapter``: the :class:`~scanners.adapters.base.ScannerAdapter` implementation)."""

from scanners.adapters.nessus.adapter import NessusAdapter

__all__ = ["NessusAdapter"]
