"""Validation shared by the scanner admin form and the YAML loader (one rule, one message)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

from django.core.exceptions import ValidationError

from pools.spellings import host_address, punycode_host


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
    if parts.username is not None or parts.password is not None:
        # never echo it: the part before '@' may be a password
        return "must not contain a user or password (user:password@): set the scanner's credentials instead"
    if not parts.hostname:
        return f"{value!r} has no host name, e.g. https://scanner.example.com:8834"
    if not parts.hostname.isascii():
        return f"{value!r} {unicode_host_problem(parts)}"
    numeric = numeric_host_problem(parts.hostname)
    if numeric:
        return f"{value!r} {numeric}"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{value!r} has an invalid port (1-65535)"
    if parts.query or parts.fragment:
        return f"{value!r} must be a base URL without ?query or #fragment"
    return None


def numeric_host_problem(host: str) -> str | None:
    """Why a URL's host, read as an address, is not written plainly: a number the C library reads as an IPv4
    address (``167837962``, ``0x0a09090b``, ``10.9.2316``, ``010.0.0.1``) or an IPv4-mapped IPv6 address. Scope
    checks protect a scanner's address as written; the plain spelling is the one they compare."""
    host = host.strip("[]").rstrip(".")
    address = host_address(host)
    if address is None:
        return None
    if address.version == 4 and host != str(address):
        return f"has the host {host!r}, an IPv4 address in another notation: write it as {address}"
    if address.version == 4:
        return None
    if ipaddress.ip_address(host).ipv4_mapped is not None:
        return f"has the host {host!r}, an IPv4 address written as IPv6: write it as {address}"
    return None


def unicode_host_problem(parts: SplitResult) -> str:
    """Why a URL whose host has non-ASCII characters is refused, with its punycode spelling when there is one. The
    HTTP client connects to the punycode name and targets are given in punycode: the scanners' protection compares
    the names as written, so the URL must write the name the client uses."""
    name = punycode_host(parts.hostname or "")
    advice = "write the host name in punycode (xn--…)"
    if name:
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        advice += f": {urlunsplit(parts._replace(netloc=name + port))}"
    return f"has a host name with non-ASCII characters: {advice}"


def validate_scanner_url(value: str) -> None:
    problem = scanner_url_problem(value)
    if problem:
        raise ValidationError(f"URL {problem}", code="invalid_url")


PLAIN_HTTP_REFUSED = (
    "uses plain http://, which would send the scanner's API keys or password unencrypted: use https://, or "
    "tick 'allow plain HTTP' on this scanner or its pool (allow_plain_http: true in YAML) if this is deliberate"
)


def plain_http_problem(url: str, *, allowed: bool) -> str | None:
    """Why ``url`` may not be used: plain HTTP is refused unless the scanner or its pool allows it explicitly."""
    if not allowed and isinstance(url, str) and urlsplit(url.strip()).scheme == "http":
        return PLAIN_HTTP_REFUSED
    return None


# One message whatever the reason (missing, unreadable, a directory, not PEM): saying which would tell a
# staff user whether a file exists on the server.
CA_BUNDLE_UNUSABLE = (
    "not a usable CA bundle: give the absolute path of a readable file containing PEM CA certificate(s) "
    "(-----BEGIN CERTIFICATE-----) on the machine the workers run on"
)
CA_BUNDLE_MAX_BYTES = 10 * 1024 * 1024


def ca_bundle_problem(path: str) -> str | None:
    """``None`` when ``path`` is a readable file with at least one PEM certificate, else the one message."""
    try:
        bundle = Path(path)
        if not bundle.is_absolute() or not bundle.is_file() or bundle.stat().st_size > CA_BUNDLE_MAX_BYTES:
            return CA_BUNDLE_UNUSABLE
        with bundle.open("rb") as handle:
            data = handle.read(CA_BUNDLE_MAX_BYTES)
        if b"-----BEGIN CERTIFICATE-----" not in data:
            return CA_BUNDLE_UNUSABLE
        ssl.create_default_context(cafile=str(bundle))  # parses every certificate in it
    except (OSError, ValueError, ssl.SSLError):
        return CA_BUNDLE_UNUSABLE
    return None


def validate_ca_bundle(value: str) -> None:
    if value and ca_bundle_problem(value):
        raise ValidationError(f"CA bundle: {CA_BUNDLE_UNUSABLE}", code="invalid_ca_bundle")


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
