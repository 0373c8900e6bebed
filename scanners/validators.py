"""Validation shared by the scanner admin form and the YAML loader (one rule, one message)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError


def scanner_url_problem(value: str) -> str | None:
    """Why ``value`` is not a usable scanner base URL, or ``None`` when it is.

    Unlike Django's ``URLValidator`` this accepts single-label host names (``https://dmz-scanner:8834``),
    which is how scanners are usually reached inside a network zone or a compose network.
    """
    if not isinstance(value, str) or not value.strip():
        return "is empty: give the scanner's base URL, e.g. https://scanner.example.com:8834"
    if any(ch.isspace() for ch in value):
        return f"{value!r} contains whitespace"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        return f"{value!r} must start with https:// (or http://), e.g. https://scanner.example.com:8834"
    if not parts.hostname:
        return f"{value!r} has no host name, e.g. https://scanner.example.com:8834"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{value!r} has an invalid port (1-65535)"
    if parts.query or parts.fragment:
        return f"{value!r} must be a base URL without ?query or #fragment"
    return None


def validate_scanner_url(value: str) -> None:
    problem = scanner_url_problem(value)
    if problem:
        raise ValidationError(f"URL {problem}", code="invalid_url")


def scanner_auth_problem(access_key: str, secret_key: str, username: str, password: str) -> str | None:
    """Why this combination of scanner credentials cannot log in, or ``None`` when it can."""
    if bool(access_key) != bool(secret_key):
        missing = "secret_key" if access_key else "access_key"
        return f"API keys come in pairs: {missing} is missing (give both access_key and secret_key, or neither)"
    if access_key and secret_key:
        return None
    if username and password:
        return None
    if username and not password:
        return "password is missing for the session login (give both username and password)"
    if password and not username:
        return "username is missing for the session login (give both username and password)"
    return "no credentials: give access_key + secret_key (API keys) or username + password (session login)"
