"""Changing a scanner's configuration: stored secrets belong to its connection (issue #8, DESIGN §5).

Invariant: a scanner's stored secrets (API keys, password) are only ever sent to the connection they were
given for. When the URL, the TLS settings (``verify_tls``, ``ca_bundle``) or the pool of a scanner
change, every stored secret that is not given again in the same change is cleared, the scanner is marked
``auth_failed`` until credentials are typed again (so nothing is dispatched to it), and the change is
recorded as a :class:`~scanners.models.ScannerEvent` (old → new, who). The admin form and
``load_scanners`` both go through :func:`update_scanner`, so the rule exists once.

Four eyes on where scan credentials go: a change of the connection (the fields above and
``allow_plain_http``) also makes the scanner *unconfirmed*; authenticated scans (which carry SSH
credentials) are not dispatched to it until another person with ``scanners.confirm_scanner_connection``
confirms it (:func:`confirm_connection`), or ``load_scanners`` writes it (an operator with the shell).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from pools.models import Pool
from scanners.models import Health, Scanner, ScannerEvent, ScannerEventKind
from scanners.signals import connection_confirmed, scanner_changed
from scanners.validators import plain_http_problem

CONNECTION_FIELDS = ("url", "verify_tls", "ca_bundle", "pool")
SECRET_FIELDS = ("access_key", "secret_key", "password")
# A change of any of these makes the connection unconfirmed for authenticated scans (four eyes).
CONFIRMATION_FIELDS = (*CONNECTION_FIELDS, "allow_plain_http")
CONFIRM_PERMISSION = "scanners.confirm_scanner_connection"
# Events naming who set the current connection since its last confirmation (they may not confirm it).
CHANGE_EVENT_KINDS = (ScannerEventKind.URL_CHANGED, ScannerEventKind.CONNECTION_CHANGED,
                      ScannerEventKind.NEEDS_CONFIRMATION)
CLEARED_DETAIL = (
    "stored credentials ({fields}) were cleared because the scanner's {changed} changed: type the API keys or "
    "password again for the new connection"
)


@dataclass(frozen=True)
class ScannerUpdate:
    changed: tuple[str, ...]  # columns written
    connection_changed: tuple[str, ...]  # of CONNECTION_FIELDS
    cleared: tuple[str, ...]  # secrets dropped because the connection changed
    unconfirmed: tuple[str, ...] = ()  # of CONFIRMATION_FIELDS: the change that made the connection unconfirmed


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
    unconfirmed = [name for name in CONFIRMATION_FIELDS if name in changed]
    if unconfirmed:
        scanner.connection_confirmed, scanner.connection_confirmed_by, scanner.connection_confirmed_at = False, "", None
        changed += ["connection_confirmed", "connection_confirmed_by", "connection_confirmed_at"]
    if changed:
        scanner.save(update_fields=[*changed, "updated_at"])
        scanner_changed.send(sender=Scanner, scanner_id=scanner.pk, pool_id=scanner.pool_id)
    after = {"url": scanner.url, "verify_tls": scanner.verify_tls, "ca_bundle": scanner.ca_bundle,
             "pool": scanner.pool.name}  # fmt: skip
    _record_connection_events(scanner, connection, before, after, cleared, actor)
    if unconfirmed:
        ScannerEvent.objects.create(
            scanner=scanner, kind=ScannerEventKind.NEEDS_CONFIRMATION, actor=actor,
            message=f"{', '.join(unconfirmed)} changed: authenticated scans are not dispatched here until another "
            "person confirms the connection",
        )
    return ScannerUpdate(tuple(changed), tuple(connection), tuple(cleared), tuple(unconfirmed))


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
    """The first event of a scanner: where it points, and who created it (a new scanner starts unconfirmed)."""
    unconfirmed = "" if scanner.connection_confirmed else " (unconfirmed for authenticated scans)"
    ScannerEvent.objects.create(
        scanner=scanner, kind=ScannerEventKind.URL_CHANGED, actor=actor,
        message=f"created with url {redact_url(scanner.url)} in pool {scanner.pool.name}{unconfirmed}",
    )
    scanner_changed.send(sender=Scanner, scanner_id=scanner.pk, pool_id=scanner.pool_id)


def connection_changers(scanner: Scanner | int) -> set[str]:
    """Who set the scanner's current connection: the actors of its connection events since the last
    confirmation (creation included). Four eyes: none of them may confirm it."""
    scanner_id = getattr(scanner, "pk", scanner)
    events = ScannerEvent.objects.filter(scanner_id=scanner_id)
    last = events.filter(kind=ScannerEventKind.CONNECTION_CONFIRMED).order_by("-id").values_list("id", flat=True)
    since = last.first() or 0
    return set(events.filter(kind__in=CHANGE_EVENT_KINDS, id__gt=since).values_list("actor", flat=True))


def confirmation_problem(scanner: Scanner, user: AbstractBaseUser | AnonymousUser) -> str:
    """Why ``user`` may not confirm ``scanner``'s connection ("" if they may): the permission, and four eyes
    (nobody confirms a connection they set; a superuser may, as they may grant themselves any permission)."""
    if not user.has_perm(CONFIRM_PERMISSION):
        return f"confirming a scanner's connection needs the permission {CONFIRM_PERMISSION}"
    if scanner.connection_confirmed:
        return ""
    if user.get_username() in connection_changers(scanner) and not user.is_superuser:
        return (f"{user.get_username()} changed {scanner.name}'s connection: another person must confirm it "
                "(four eyes)")
    return ""


def connection_fingerprint(scanner: Scanner) -> str:
    """A short digest of the connection a person reviews before confirming it (URL, TLS settings, pool, plain HTTP):
    the admin sends it with the confirmation, so a connection changed after the page was shown is not confirmed."""
    connection = [scanner.url, scanner.verify_tls, scanner.ca_bundle, scanner.pool_id, scanner.allow_plain_http]
    return hashlib.sha256(json.dumps(connection).encode()).hexdigest()[:20]


def connection_summary(scanner: Scanner) -> str:
    """The connection in words, as a confirmation shows it."""
    details = [f"verify TLS {'on' if scanner.verify_tls else 'off'}"]
    details += [f"CA bundle {scanner.ca_bundle}"] if scanner.ca_bundle else []
    details += ["plain HTTP allowed"] if scanner.allow_plain_http else []
    return f"{redact_url(scanner.url)} ({', '.join(details)})"


@transaction.atomic
def confirm_connection(scanner_id: int, *, user: AbstractBaseUser | AnonymousUser | None = None,
                       actor: str = "", seen: str | None = None) -> bool:
    """Mark the scanner's current connection confirmed for authenticated scans; returns False when it already was.

    ``user``: a person (the admin), checked by :func:`confirmation_problem` (raises :class:`PermissionDenied`), who
    confirms the connection they reviewed: ``seen`` is its :func:`connection_fingerprint`, and a connection changed
    since (or no ``seen``) is refused, naming what it is now. Without ``user`` the caller is an operator with the
    shell (``load_scanners``), named by ``actor``."""
    scanner = Scanner.objects.select_for_update().get(pk=scanner_id)
    if user is not None:
        problem = confirmation_problem(scanner, user)
        if problem:
            raise PermissionDenied(problem)
        if not scanner.connection_confirmed and seen != connection_fingerprint(scanner):
            raise PermissionDenied(
                f"{scanner.name}'s connection changed since you reviewed it (or the confirmation did not say which "
                f"connection you reviewed): it is now {connection_summary(scanner)}. Open the scanner's page again, "
                "check it and confirm from there")
        actor = user.get_username()
    if scanner.connection_confirmed:
        return False
    now = timezone.now()
    Scanner.objects.filter(pk=scanner_id).update(connection_confirmed=True, connection_confirmed_by=actor,
                                                 connection_confirmed_at=now, updated_at=now)
    ScannerEvent.objects.create(
        scanner=scanner, kind=ScannerEventKind.CONNECTION_CONFIRMED, actor=actor,
        message=f"connection confirmed for authenticated scans: {connection_summary(scanner)}",
    )
    connection_confirmed.send(sender=Scanner, scanner_id=scanner_id, pool_id=scanner.pool_id)
    return True
