"""Print `export` lines that load scanpool's secrets from files (Compose secrets), for docker/entrypoint.sh.

- ``VAR_FILE`` for DJANGO_SECRET_KEY, SCANPOOL_SECRET_KEYS, SCANPOOL_METRICS_TOKEN, SCANPOOL_MCP_TOKEN: VAR = the
  file's content (the MCP server reads SCANPOOL_API_TOKEN_FILE itself).
- ``DATABASE_PASSWORD_FILE`` / ``REDIS_PASSWORD_FILE``: the password goes, percent-encoded, into the user-info
  part of DATABASE_URL / REDIS_URL (given without one, e.g. ``redis://redis:6379/0``).
A named file that cannot be read is an error naming the variable. Values are shell-quoted; nothing is logged.
Standard library only: it runs before Django and in the image's healthchecks.
"""

from __future__ import annotations

import os
import shlex
import sys
from urllib.parse import quote, urlsplit, urlunsplit

PLAIN = ("DJANGO_SECRET_KEY", "SCANPOOL_SECRET_KEYS", "SCANPOOL_METRICS_TOKEN", "SCANPOOL_MCP_TOKEN")
URLS = {"DATABASE_URL": "DATABASE_PASSWORD_FILE", "REDIS_URL": "REDIS_PASSWORD_FILE"}


def read(var: str) -> str:
    path = os.environ[var]
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise SystemExit(f"{var}={path}: cannot read the secret file ({exc.strerror})") from None
    if not value:
        raise SystemExit(f"{var}={path}: the secret file is empty")
    return value


def with_password(url: str, password: str, var: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        raise SystemExit(f"{var} must be a URL with a host (e.g. redis://redis:6379/0) to take a password file")
    user = quote(parts.username or "", safe="")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def resolved() -> dict[str, str]:
    """The variables the secret files define (only those; the caller merges them into its environment)."""
    values: dict[str, str] = {}
    for var in PLAIN:
        if os.environ.get(f"{var}_FILE"):
            values[var] = read(f"{var}_FILE")
    for var, file_var in URLS.items():
        if os.environ.get(file_var):
            if not os.environ.get(var):
                raise SystemExit(f"{file_var} is set but {var} is not: set {var} (without the password)")
            values[var] = with_password(os.environ[var], read(file_var), var)
    return values


def main() -> None:
    lines = [f"export {var}={shlex.quote(value)}" for var, value in resolved().items()]
    sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))


if __name__ == "__main__":
    main()
