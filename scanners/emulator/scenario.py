"""Which authentication scenario a scan plays, from the credentials it was created with.

Conventions (DESIGN §9, documented in docs/emulator.md):

* no SSH credentials, ``basic`` (or any non-``advanced``) template → ``untrusted``;
* no SSH credentials, ``advanced`` template (what scanpool uses for authenticated scans) → ``none``
  ("no credentials provided", plugin 110723);
* SSH password ``good`` → ``success``; ``noprivs`` → ``noprivs`` (logged in, not enough privilege);
  ``bad`` or any other password → ``rejected``;
* SSH public key: a file that is not a PEM/OpenSSH private key → ``rejected`` (Nessus cannot parse it);
  passphrase ``bad`` → ``rejected``, ``noprivs`` → ``noprivs``; otherwise ``success``;
* privilege escalation (``elevate_privileges_with`` other than ``Nothing``) with escalation password
  ``bad`` or ``noprivs`` turns a ``success`` into ``noprivs``.
"""

from __future__ import annotations

from typing import Any

ELEVATE_CHOICES = frozenset(
    {"Nothing", "sudo", "su", "su+sudo", "pbrun", "dzdo", ".k5login", "Cisco 'enable'", "Checkpoint Gaia 'expert'"}
)
AUTH_METHODS = frozenset({"password", "public key"})


class CredentialError(ValueError):
    """The credentials object is malformed (answered 400 like Nessus does)."""


def ssh_entries(credentials: Any) -> list[dict[str, Any]]:
    if not credentials:
        return []
    if not isinstance(credentials, dict):
        raise CredentialError("Invalid 'credentials' field: expected an object with 'add'")
    add = credentials.get("add") or {}
    if not isinstance(add, dict):
        raise CredentialError("Invalid 'credentials.add' field: expected an object keyed by category")
    entries: list[dict[str, Any]] = []
    for category, by_type in add.items():
        if not isinstance(by_type, dict):
            raise CredentialError(f"Invalid credentials category {category!r}: expected an object")
        for cred_type, items in by_type.items():
            if cred_type.upper() != "SSH":
                continue
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise CredentialError("Invalid 'credentials.add.Host.SSH' field: expected a list of objects")
            entries.extend(items)
    return entries


def scenario_for(template_name: str, credentials: Any, uploads: dict[str, bytes]) -> tuple[str, str, str, str]:
    """``(scenario, ssh user, auth method, elevate_privileges_with)``; raises :class:`CredentialError`."""
    entries = ssh_entries(credentials)
    if not entries:
        return ("none" if template_name == "advanced" else "untrusted"), "", "", "Nothing"
    entry = entries[0]
    method = entry.get("auth_method", "password")
    if method not in AUTH_METHODS:
        raise CredentialError(f"Invalid SSH auth_method {method!r}: this emulator knows 'password' and 'public key'")
    username = str(entry.get("username") or "")
    if not username:
        raise CredentialError("Invalid SSH credential: 'username' is required")
    elevate = str(entry.get("elevate_privileges_with") or "Nothing")
    if elevate not in ELEVATE_CHOICES:
        raise CredentialError(f"Invalid SSH credential: unknown 'elevate_privileges_with' value {elevate!r}")

    if method == "password":
        secret = str(entry.get("password") or "")
        scenario = {"good": "success", "noprivs": "noprivs"}.get(secret, "rejected")
    else:
        key_ref = str(entry.get("private_key") or "")
        key = uploads.get(key_ref)
        if key is None:
            raise CredentialError(f"Invalid SSH credential: 'private_key' {key_ref!r} is not an uploaded file")
        passphrase = str(entry.get("private_key_passphrase") or "")
        if b"PRIVATE KEY-----" not in key:
            scenario = "rejected"
        else:
            scenario = {"bad": "rejected", "noprivs": "noprivs"}.get(passphrase, "success")

    if scenario == "success" and elevate != "Nothing":
        if str(entry.get("escalation_password") or "") in {"bad", "noprivs"}:
            scenario = "noprivs"
    return scenario, username, method, elevate
