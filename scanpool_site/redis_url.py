"""``REDIS_URL`` carries the Redis password: helpers to test for it and to show the URL without it."""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, urlencode, urlparse


def has_password(url: str) -> bool:
    parsed = urlparse(url)
    return bool(parsed.password or parse_qs(parsed.query).get("password", [""])[0])


def redacted(url: str) -> str:
    """``url`` with its password (user info or ``?password=``) replaced by ``***``, for messages and logs."""
    base, sep, query = url.partition("?")
    parsed = urlparse(base)
    if parsed.password is not None:
        userinfo, host = parsed.netloc.rsplit("@", 1)
        base = base.replace(parsed.netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)
    if query:
        pairs = [(k, "***" if k == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*")
    return base + sep + query
