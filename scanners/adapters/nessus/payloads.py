"""Scan definitions in Nessus' documented ``POST /scans`` shape, built from a :class:`ScanSpec`.

Templates per scan type: ``untrusted`` → ``basic`` (Basic Network Scan: Tenable's "full system scan
suitable for any host"); ``authenticated`` and ``authenticated_privileged`` → ``advanced`` (Advanced
Scan, the template Tenable documents for customised, credentialed scans). Both are resolved by name
from ``GET /editor/scan/templates``; no UUID is hard-coded.

Credentials (keys of the submission contract, DESIGN §9): ``username``; ``password`` or
``private_key`` (PEM/OpenSSH text; uploaded with ``POST /file/upload``) with optional
``private_key_passphrase``; for ``authenticated_privileged`` also ``elevate_privileges_with`` (``sudo``,
``su``, ``su+sudo``, ``pbrun``, ``dzdo``), ``escalation_account`` (default ``root``) and
``escalation_password``. They go to ``credentials.add.Host.SSH[0]``.
"""

from __future__ import annotations

from typing import Any

from pools.scanner_targets import text_targets
from scanners.adapters.base import InvalidScanRequestError, ScanSpec, scan_name_for

TEMPLATE_FOR_SCAN_TYPE = {
    "untrusted": "basic",
    "authenticated": "advanced",
    "authenticated_privileged": "advanced",
}
ESCALATION_METHODS = ("sudo", "su", "su+sudo", "pbrun", "dzdo")
CREDENTIAL_KEYS = frozenset(
    {"username", "password", "private_key", "private_key_passphrase", "elevate_privileges_with",
     "escalation_account", "escalation_password"}
)


def template_name_for(scan_type: str) -> str:
    try:
        return TEMPLATE_FOR_SCAN_TYPE[scan_type]
    except KeyError:
        raise InvalidScanRequestError(
            f"unknown scan_type {scan_type!r}; use one of {', '.join(TEMPLATE_FOR_SCAN_TYPE)}"
        ) from None


def ssh_credential(spec: ScanSpec) -> dict[str, Any] | None:
    """The ``credentials.add.Host.SSH[0]`` entry for ``spec`` (``private_key`` still as key text), or None."""
    creds = spec.credentials or {}
    if spec.scan_type == "untrusted" or not creds:
        return None
    unknown = set(creds) - CREDENTIAL_KEYS
    if unknown:
        raise InvalidScanRequestError(
            f"unknown credentials key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(CREDENTIAL_KEYS))}"
        )
    username = str(creds.get("username") or "").strip()
    if not username:
        raise InvalidScanRequestError("credentials.username is required for an authenticated scan")
    password, key = creds.get("password"), creds.get("private_key")
    if bool(password) == bool(key):
        raise InvalidScanRequestError("credentials need exactly one of 'password' or 'private_key'")
    if key:
        entry: dict[str, Any] = {"auth_method": "public key", "username": username, "private_key": str(key),
                                 "private_key_passphrase": str(creds.get("private_key_passphrase") or "")}
    else:
        entry = {"auth_method": "password", "username": username, "password": str(password),
                 "custom_password_prompt": ""}
    entry["elevate_privileges_with"] = "Nothing"
    if spec.scan_type == "authenticated_privileged":
        method = creds.get("elevate_privileges_with")
        if method not in ESCALATION_METHODS:
            raise InvalidScanRequestError(
                f"credentials.elevate_privileges_with must be one of {', '.join(ESCALATION_METHODS)} for an "
                f"authenticated_privileged scan (got {method!r})"
            )
        entry["elevate_privileges_with"] = method
        entry["escalation_account"] = str(creds.get("escalation_account") or "root")
        entry["escalation_password"] = str(creds.get("escalation_password") or "")
    return entry


def scan_body(spec: ScanSpec, template_uuid: str, ssh: dict[str, Any] | None) -> dict[str, Any]:
    """The ``POST /scans`` body; ``ssh`` is the entry from :func:`ssh_credential` with the key uploaded."""
    targets = text_targets(spec.targets)  # the same line the launch step re-checked against the scope
    if not targets:
        raise InvalidScanRequestError("targets is empty: give at least one host, address or network")
    body: dict[str, Any] = {
        "uuid": template_uuid,
        "settings": {
            "name": scan_name_for(spec.task_id, spec.name),
            "description": spec.description,
            "text_targets": targets,
            "enabled": False,
            "launch_now": False,
        },
    }
    if ssh is not None:
        body["credentials"] = {"add": {"Host": {"SSH": [ssh]}}}
    return body
