"""Write the database's pools and scanners as a configuration file (the shape ``load_scanners`` reads).

Secrets are never written: each stored secret becomes a ``${VAR}`` placeholder named from the
scanner (``dmz-scanner1``'s password → ``${DMZ_SCANNER1_PASSWORD}``), so the file loads back
unchanged once those variables are set.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import yaml

from pools.models import Pool
from scanners.config.schema import DEFAULT_POLL_INTERVAL, DEFAULT_SCAN_TIMEOUT, ScannerSpec, format_duration
from scanners.models import Scanner


def secret_variable(scanner_name: str, field_name: str) -> str:
    """The environment variable that holds ``field_name`` of scanner ``scanner_name`` in an export."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", scanner_name).strip("_").upper() or "SCANNER"
    if stem[0].isdigit():
        stem = f"SCANNER_{stem}"
    return f"{stem}_{field_name.upper()}"


def _scanner_entry(scanner: Scanner, variables: list[str]) -> dict[str, object]:
    entry: dict[str, object] = {"name": scanner.name, "kind": scanner.kind, "url": scanner.url}
    if scanner.description:
        entry["description"] = scanner.description
    for field_name in ("access_key", "secret_key", "username", "password"):
        value = getattr(scanner, field_name)
        if not value:
            continue
        if field_name in ScannerSpec.SECRET_FIELDS:
            variable = secret_variable(scanner.name, field_name)
            if variable in variables:  # two names that differ only in punctuation ("a-b", "a_b")
                variable = f"{variable}_{scanner.pk}"
            variables.append(variable)
            entry[field_name] = f"${{{variable}}}"
        else:
            entry[field_name] = value
    entry["verify_tls"] = scanner.ca_bundle if scanner.verify_tls and scanner.ca_bundle else scanner.verify_tls
    if scanner.allow_plain_http:
        entry["allow_plain_http"] = True
    entry["max_concurrent_scans"] = scanner.max_concurrent_scans
    entry["enabled"] = scanner.enabled
    return entry


def export_document() -> tuple[dict[str, object], list[str]]:
    """The configuration as a YAML-ready dict, and the environment variables its placeholders need."""
    variables: list[str] = []
    pools = []
    for pool in Pool.objects.prefetch_related("scanners").order_by("name"):
        entry: dict[str, object] = {"name": pool.name}
        if pool.description:
            entry["description"] = pool.description
        entry["enabled"] = pool.enabled
        entry["scope"] = list(pool.scope or [])
        entry["allow_any_target"] = pool.allow_any_target
        entry["max_queued"] = pool.max_queued
        entry["scan_timeout"] = format_duration(pool.scan_timeout_seconds or DEFAULT_SCAN_TIMEOUT)
        entry["poll_interval"] = format_duration(pool.poll_interval_seconds or DEFAULT_POLL_INTERVAL)
        if pool.allow_plain_http:
            entry["allow_plain_http"] = True
        entry["scanners"] = [
            _scanner_entry(scanner, variables) for scanner in sorted(pool.scanners.all(), key=lambda s: s.name)
        ]
        pools.append(entry)
    return {"pools": pools}, variables


def export_yaml() -> str:
    document, variables = export_document()
    header = [
        f"# scanpool scanner configuration, exported {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC.",
        "# Load it with: manage.py load_scanners FILE [--dry-run] [--prune]  (schema: docs/scanners-yaml.md)",
    ]
    if variables:
        header.append("# Secrets are not exported: set these environment variables before loading this file:")
        header.extend(f"#   {variable}" for variable in variables)
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    return "\n".join(header) + "\n" + body
