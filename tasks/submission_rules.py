"""The rules ``tasks.services.submit`` checks a submission against, field by field, before it writes anything:
text fields, credentials (shape, size, characters; values never echoed), the pool (enabled) and its scope, and the
timeout. A retry and an approval re-run the pool and scope checks (:mod:`tasks.policies.recheck`).
Each raises :class:`~tasks.errors.SubmissionError` naming the field and the fix."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import connection
from django.views.decorators.debug import sensitive_variables

from pools.models import Pool
from pools.scope import refusals
from scanners.scope import pool_scope
from tasks.errors import ScopeError, SubmissionError, TokenRevoked
from tasks.models import ApiToken, ClientPolicy, ScanType

ESCALATION_METHODS = ("sudo", "su", "su+sudo", "pbrun", "dzdo")
_CREDENTIAL_KEYS = {"username", "password", "private_key", "elevate_privileges_with", "escalation_account",
                    "escalation_password"}
# Limits on scan credentials: (kind, most characters or bytes). Names are printable text; secrets may hold any
# character but NUL; a private key is PEM or OpenSSH text.
_NAME, _SECRET, _KEY = "name", "secret", "key"
_CREDENTIAL_RULES = {"username": (_NAME, 256), "escalation_account": (_NAME, 256),
                     "elevate_privileges_with": (_NAME, 256), "password": (_SECRET, 1024),
                     "escalation_password": (_SECRET, 1024), "private_key": (_KEY, 16 * 1024)}
_KEY_BEGIN_RE = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----\r?\n")
_KEY_TEXT_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) | {"\r", "\n", "\t"}


def clean_text(field: str, value: Any, *, max_length: int, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise SubmissionError(field, f"must be a string, not {type(value).__name__}")
    # Before trimming: strip() would drop a vertical tab or file separator at an end, but not in the middle.
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):
        raise SubmissionError(field, "contains control characters (such as NUL): remove them")
    value = value.strip()
    if required and not value:
        what = "a short name for the scan" if field == "name" else "a non-empty value (or leave it out)"
        raise SubmissionError(field, f"is required: give {what}", code="required")
    if len(value) > max_length:
        raise SubmissionError(field, f"is {len(value)} characters long; at most {max_length} are allowed")
    return value


@sensitive_variables()  # every local: error reports (500 pages, mails) must not show the credentials
def clean_credentials(scan_type: str, credentials: Any) -> dict[str, str] | None:
    if scan_type == ScanType.UNTRUSTED:
        if credentials:
            raise SubmissionError(
                "credentials", "an untrusted scan takes no credentials: drop them, or use "
                "scan_type 'authenticated' (or 'authenticated_privileged') to log in to the targets")
        return None
    if not credentials:
        raise SubmissionError(
            "credentials", f"an '{scan_type}' scan needs credentials: give username and password (or private_key)",
            code="required")
    if not isinstance(credentials, dict):
        raise SubmissionError("credentials", "must be an object with username, password or private_key, …")
    unknown = sorted(set(credentials) - _CREDENTIAL_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_CREDENTIAL_KEYS))
        raise SubmissionError(f"credentials.{unknown[0]}", f"unknown key; allowed keys: {allowed}")
    clean: dict[str, str] = {}
    for key, value in credentials.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SubmissionError(f"credentials.{key}", f"must be a string, not {type(value).__name__}")
        clean[key] = value
    if not clean.get("username", "").strip():
        raise SubmissionError("credentials.username", "is required for an authenticated scan", code="required")
    if "password" not in clean and "private_key" not in clean:
        raise SubmissionError("credentials.password", "give exactly one of password or private_key", code="required")
    if "password" in clean and "private_key" in clean:
        raise SubmissionError("credentials.private_key", "give exactly one of password or private_key, not both")
    for key in sorted(clean, key=sorted(_CREDENTIAL_RULES).index):
        _check_credential(key, clean[key])
    if clean.get("elevate_privileges_with", "").strip().lower() == "nothing":  # Nessus' word for "no escalation"
        del clean["elevate_privileges_with"]
    escalation = {"elevate_privileges_with", "escalation_account", "escalation_password"} & set(clean)
    if scan_type == ScanType.AUTHENTICATED and escalation:
        raise SubmissionError(
            f"credentials.{sorted(escalation)[0]}", "privilege escalation needs scan_type 'authenticated_privileged' "
            "(or drop the escalation settings)")
    if scan_type == ScanType.AUTHENTICATED_PRIVILEGED:
        method = clean.get("elevate_privileges_with", "")
        if method not in ESCALATION_METHODS:
            raise SubmissionError(
                "credentials.elevate_privileges_with",
                # the value is not repeated: a secret pasted into the wrong field must not come back in the answer
                f"is not a supported method; use one of {', '.join(ESCALATION_METHODS)}" if method else
                f"is required for an 'authenticated_privileged' scan: one of {', '.join(ESCALATION_METHODS)}",
                code="required" if not method else "invalid")
    return clean


def check_pool_accepts(pool: Pool) -> None:
    """A disabled pool accepts no new scan: no submission, and no retry or approval (each starts a scan too)."""
    if not pool.enabled:
        raise SubmissionError("pool", f"pool {pool.name!r} is disabled and accepts no new scans: "
                              "choose another pool or ask an administrator to enable it", code="pool_disabled")


def check_scope(pool: Pool, targets: list) -> None:
    scope = pool_scope(pool)
    if scope.allows_nothing:
        raise ScopeError("targets", f"pool {pool.name!r} has an empty scope and allows no target: an administrator "
                         "must set its scope (or allow_any_target) before it accepts scans")
    refused = refusals(targets, scope)
    if not refused:
        return
    outside = [text for text, why in refused if why == "outside the scope"]
    protected = [f"{text} is {why}" for text, why in refused if why != "outside the scope"]
    parts = []
    if outside:
        allowed = "any target" if scope.unrestricted else ", ".join(pool.scope)
        parts.append(f"not allowed in pool {pool.name!r}: {', '.join(outside[:10])}{' …' if len(outside) > 10 else ''}"
                     f"; the pool's scope is {allowed}")
    if protected:
        parts.append("; ".join(protected[:5]) + (" …" if len(protected) > 5 else ""))
    raise ScopeError("targets", "; ".join(parts))


@sensitive_variables("value")
def _check_credential(key: str, value: str) -> None:
    """Size and character limits of one credential; messages name the field and never echo the value."""
    field = f"credentials.{key}"
    kind, limit = _CREDENTIAL_RULES[key]
    size = len(value.encode()) if kind == _KEY else len(value)
    if size > limit:
        unit = "bytes" if kind == _KEY else "characters"
        raise SubmissionError(field, f"is {size} {unit} long; at most {limit} {unit} are allowed")
    if "\x00" in value:
        raise SubmissionError(field, "contains a NUL character: remove it")
    if kind == _NAME and not value.isprintable():
        raise SubmissionError(field, "contains control or non-printable characters (new line, tab…): remove them")
    if kind == _KEY and not _looks_like_private_key(value):
        raise SubmissionError(field, "is not a PEM or OpenSSH private key: give the whole key file, from "
                              "-----BEGIN … PRIVATE KEY----- to -----END … PRIVATE KEY-----")


@sensitive_variables("value", "text", "begin")
def _looks_like_private_key(value: str) -> bool:
    """PEM (``-----BEGIN RSA PRIVATE KEY-----`` …) or OpenSSH text: a BEGIN line, ASCII text, the matching END."""
    text = value.strip()
    begin = _KEY_BEGIN_RE.match(text)
    return bool(begin) and text.endswith(f"-----END {begin.group(1)}-----") and set(text) <= _KEY_TEXT_CHARS


def clean_timeout(value: Any, pool: Pool) -> int:
    if value is None:
        return pool.scan_timeout_seconds
    low, high = settings.SCANPOOL_TIMEOUT_MIN_SECONDS, settings.SCANPOOL_TIMEOUT_MAX_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubmissionError("timeout_seconds", f"must be a whole number of seconds ({low}..{high})")
    if not low <= value <= high:
        raise SubmissionError("timeout_seconds", f"{value} is out of range: give {low}..{high} seconds "
                              f"(or leave it out to use the pool's default of {pool.scan_timeout_seconds})")
    return value


def check_token_still_valid(api_token: ApiToken | None) -> None:
    """Inside the submission's transaction: the token was not revoked since the request was authenticated. Its row
    is locked until the commit, so a revocation (``tasks.revocation``) either came first — refused here, nothing
    created — or waits for this scan, which its cancel pass then sees (SQLite: the IMMEDIATE transaction's write
    lock does the same). Else a scan in flight at the revocation of a leaked key landed after the cancel pass.

    The same statement says whether the client has a policy (``api_token.policy_pk``, None when it has none), so a
    client without one costs no further query (:func:`tasks.policies.checks.policy_of`), and the policy is read
    under the token's lock."""
    if api_token is None:
        return
    row = _token_row(api_token.pk)
    if row is None:
        raise TokenRevoked("non_field_errors", "the API token was revoked while this request was in flight: nothing "
                           "was created; create a new token (admin > API tokens, or manage.py create_api_token)")
    api_token.policy_pk = row[0]


_TOKEN_SQL: dict[str, str] = {}  # per database vendor, made once from the models' own table and column names
_LOCK = {"sqlite": "", "postgresql": " FOR NO KEY UPDATE OF t"}  # SQLite: the IMMEDIATE transaction locks


def _token_row(pk: int) -> tuple[int | None] | None:
    """(policy id or None,) of the unrevoked token ``pk``, its row locked; None: revoked (or deleted).

    A raw statement, built once from the models' meta, as ``scanners.scope.pool_with_scanner_urls``: the same
    query built by the ORM (a filter, a lock, a join on the policy) cost a tenth of a submission's time. Another
    database: the ORM."""
    vendor = connection.vendor
    if vendor not in _LOCK:
        live = ApiToken.objects.select_for_update(of=("self",)).filter(pk=pk, revoked_at__isnull=True).order_by()
        return next(iter(live.values_list("policy__pk")), None)
    sql = _TOKEN_SQL.get(vendor)
    if sql is None:
        quote = connection.ops.quote_name
        policy_token, token_pk = ClientPolicy._meta.get_field("token").column, ApiToken._meta.pk.column
        sql = _TOKEN_SQL[vendor] = (
            f"SELECT p.{quote(ClientPolicy._meta.pk.column)} FROM {quote(ApiToken._meta.db_table)} t "  # noqa: S608
            f"LEFT JOIN {quote(ClientPolicy._meta.db_table)} p ON p.{quote(policy_token)} = t.{quote(token_pk)} "
            f"WHERE t.{quote(token_pk)} = %s "
            f"AND t.{quote(ApiToken._meta.get_field('revoked_at').column)} IS NULL{_LOCK[vendor]}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        return cursor.fetchone()
