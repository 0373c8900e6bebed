"""Changing a scanner's configuration: stored secrets belong to its connection (issue #8, DESIGN §5).

Invariant: a scanner's stored secrets (API keys, password) are only ever sent to the connection they were
given for. When the URL, the TLS settings (``verify_tls``, ``ca_bundle``) or the pool of a scanner
change, every stored secret that is not given again in the same change is cleared, the scanner is marked
``auth_failed`` until credentials are typed again (so nothing is dispatched to it), and the change is
recorded as a :class:`~scanners.models.ScannerEvent` (old → new, who). The admin form and
``load_scanners`` both go through :func:`update_scanner`, so the rule exists once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from pools.models import Pool
from scanners.models import Health, Scanner, ScannerEvent, ScannerEventKind
from scanners.validators import plain_http_problem

CONNECTION_FIELDS = ("url", "verify_tls", "ca_bundle", "pool")
SECRET_FIELDS = ("access_key", "secret_key", "password")
CLEARED_DETAIL = (
    "stored credentials ({fields}) were cleared because the scanner's {changed} changed: type the API keys or "
    "password again for the new connection"
)


@dataclass(frozen=True)
class ScannerUpdate:
    changed: tuple[str, ...]  # columns written
    connection_changed: tuple[str, ...]  # of CONNECTION_FIELDS
    cleared: tuple[str, ...]  # secrets dropped because the connection changed


def redact_url(url: str) -> str:
    """``url`` for events and messages: a ``user:password@`` part (only in rows saved before it was refused)
    is dropped."""
    parts = urlsplit(url or "")
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()


def _value(obj: Scanner | Mapping[str, Any], name: str) -> Any:
    if name == "pool":
        value = obj.get("pool") if isinstance(obj, Mapping) else obj.pool_id
        return getattr(value, "pk", value)
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name)


def connection_changes(current: Scanner, wanted: Mapping[str, Any]) -> list[str]:
    """The connection fields whose value in ``wanted`` differs from ``current`` (fields absent: unchanged)."""
    return [name for name in CONNECTION_FIELDS if name in wanted and _value(wanted, name) != _value(current, name)]


def secrets_to_clear(current: Scanner, connection_changed: Iterable[str], given: Collection[str]) -> list[str]:
    """The rule: after a connection change, every stored secret not given again is cleared."""
    if not list(connection_changed):
        return []
    return [name for name in SECRET_FIELDS if getattr(current, name) and name not in given]


@sensitive_variables()  # ``values`` may hold typed secrets: error reports must not show them
@transaction.atomic
def update_scanner(
    scanner_id: int, values: Mapping[str, Any], *, given_secrets: Collection[str] = (), actor: str = ""
) -> ScannerUpdate:
    """Write the configuration ``values`` onto scanner ``scanner_id`` with the connection rule above.

    ``given_secrets``: the secret fields typed (or listed) again in this change; the others are cleared when
    the connection changes. Only the columns that change are written (workers update slots, health and breaker
    on the same row concurrently). Raises :class:`ValidationError` (field ``url``) when the new URL is plain
    http:// and neither the scanner nor its pool allows it.
    """
    scanner = Scanner.objects.select_for_update().select_related("pool").get(pk=scanner_id)
    before = {"url": scanner.url, "verify_tls": scanner.verify_tls, "ca_bundle": scanner.ca_bundle,
              "pool": scanner.pool.name}  # fmt: skip
    connection = connection_changes(scanner, values)
    cleared = secrets_to_clear(scanner, connection, given_secrets)
    changed: list[str] = []
    for name, value in values.items():
        if name == "pool":
            pool_id = getattr(value, "pk", value)
            if pool_id != scanner.pool_id:
                scanner.pool_id = pool_id
                changed.append("pool")
            continue
        if getattr(scanner, name) != value:
            setattr(scanner, name, value)
            changed.append(name)
    for name in cleared:
        setattr(scanner, name, "")
        if name not in changed:
            changed.append(name)
    if "pool" in changed:
        scanner.pool = Pool.objects.get(pk=scanner.pool_id)
    problem = plain_http_problem(scanner.url, allowed=scanner.plain_http_allowed)
    if problem and {"url", "pool", "allow_plain_http"} & set(changed):
        raise ValidationError({"url": f"URL {problem}"}, code="plain_http")
    if connection:
        # Health, version and licence describe the old connection; with secrets gone, nothing may be sent.
        scanner.health = Health.AUTH_FAILED if cleared else Health.UNKNOWN
        scanner.health_detail = (
            CLEARED_DETAIL.format(fields=", ".join(cleared), changed=", ".join(connection))
            if cleared
            else f"connection changed ({', '.join(connection)}); not checked yet"
        )
        scanner.version = ""
        scanner.license_info = {}
        changed += ["health", "health_detail", "version", "license_info"]
    if changed:
        scanner.save(update_fields=[*changed, "updated_at"])
    after = {"url": scanner.url, "verify_tls": scanner.verify_tls, "ca_bundle": scanner.ca_bundle,
             "pool": scanner.pool.name}  # fmt: skip
    _record_connection_events(scanner, connection, before, after, cleared, actor)
    return ScannerUpdate(tuple(changed), tuple(connection), tuple(cleared))


def _record_connection_events(
    scanner: Scanner, connection: list[str], before: dict[str, Any], after: dict[str, Any], cleared: list[str],
    actor: str,
) -> None:
    for name in connection:
        old, new = before[name], after[name]
        if name == "url":
            old, new = redact_url(old), redact_url(new)
        kind = ScannerEventKind.URL_CHANGED if name == "url" else ScannerEventKind.CONNECTION_CHANGED
        ScannerEvent.objects.create(
            scanner=scanner, kind=kind, actor=actor, message=f"{name}: {old or '(empty)'} → {new or '(empty)'}"
        )
    if cleared:
        ScannerEvent.objects.create(
            scanner=scanner, kind=ScannerEventKind.SECRETS_CLEARED, actor=actor,
            message=f"cleared {', '.join(cleared)} (not given again with the new {', '.join(connection)})",
        )


def record_created(scanner: Scanner, actor: str) -> None:
    """The first event of a scanner: where it points, and who created it."""
    ScannerEvent.objects.create(
        scanner=scanner, kind=ScannerEventKind.URL_CHANGED, actor=actor,
        message=f"created with url {redact_url(scanner.url)} in pool {scanner.pool.name}",
    )
