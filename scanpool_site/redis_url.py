"""``REDIS_URL`` carries the Redis password: helpers to test for it, to show the URL without it, and to say what a
Redis error means for it."""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, urlencode, urlparse

import redis

# What a shell that forgot `make run`'s Redis password should run (README, "Other manage.py commands").
MAKE_RUN_REDIS_URL = 'export REDIS_URL="redis://:$(cat var/redis-password)@127.0.0.1:6379/0"'


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


def redis_problem(exc: BaseException, url: str) -> str:
    """``exc`` as ``Type: message``, and for a refused login or a Redis that does not answer, what to fix in ``url``.

    Without a password in ``REDIS_URL`` Redis' own answer ("HELLO must be called with the client already
    authenticated…") names neither the variable nor the fix.
    """
    text = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
    if isinstance(exc, redis.AuthenticationError):
        if not has_password(url):
            return (f"{text}; this Redis wants a password and REDIS_URL has none: put it in REDIS_URL, "
                    f"redis://:PASSWORD@host:port/0 (for `make run`'s Redis: {MAKE_RUN_REDIS_URL})")
        return f"{text}; check the password in REDIS_URL (for `make run`'s Redis: {MAKE_RUN_REDIS_URL})"
    if isinstance(exc, redis.ConnectionError):
        return f"{text}; is Redis running at that address? (`make run` starts one; else check REDIS_URL)"
    return text
