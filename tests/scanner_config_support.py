"""Helpers of the load_scanners / export_scanners tests: write a YAML file, load it, snapshot the config."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from django.core.management import call_command

from pools.models import Pool
from scanners.config import PoolSpec, ScannerSpec
from scanners.models import Scanner


def write(tmp_path: Path, text: str, name: str = "scanners.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("load_scanners", str(path), *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def snapshot() -> list[tuple]:
    """Every configuration value of every pool and scanner (no ids, no timestamps)."""
    pools = list(Pool.objects.order_by("name").values_list("name", *PoolSpec.CONFIG_FIELDS))
    scanners = [
        (s.name, s.pool.name, *(str(getattr(s, f)) for f in ScannerSpec.CONFIG_FIELDS))
        for s in Scanner.objects.select_related("pool").order_by("name")
    ]
    return [*pools, *scanners]


def scanner_form(scanner: Scanner, **overrides: str | None) -> dict:
    """The admin change form of ``scanner`` as a browser posts it (secrets blank: kept), with ``overrides``; an
    override of ``None`` leaves the field out (an unticked checkbox)."""
    data = {
        "pool": scanner.pool_id, "name": scanner.name, "kind": scanner.kind, "description": "", "url": scanner.url,
        "username": scanner.username, "password": "", "access_key": "", "secret_key": "", "ca_bundle": "",
        "max_concurrent_scans": scanner.max_concurrent_scans, "enabled": "on", "allow_plain_http": "on",
    }  # fmt: skip
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}
