"""The schema of a scanner configuration file (DESIGN §9), checked key by key.

Two shapes are accepted:

- the scanpool shape: ``pools: [ {name, ..., scanners: [ {name, url, ...} ]} ]``;
- the seed system's older shape: ``<pool name>: [ {instance_id, name, url, username, password,
  enabled, max_concurrent_scans} ]`` (``instance_id`` becomes the scanner name, ``name`` its description).

Every problem is collected with its line and key path; :func:`validate` raises one
:class:`~scanners.config.source.ConfigError` listing all of them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pools.scope import scope_entry_problem
from scanners.config.source import ConfigError, Document, PathT, Problem
from scanners.models import ScannerKind
from scanners.validators import ca_bundle_problem, plain_http_problem, scanner_auth_problem, scanner_url_problem

SLUG = re.compile(r"[-a-zA-Z0-9_]+\Z")
_DURATION_PART = re.compile(r"(\d+)\s*([smhd])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DEFAULT_SCAN_TIMEOUT = 24 * 3600
DEFAULT_POLL_INTERVAL = 30
LEGACY_DEFAULT_MAX_CONCURRENT_SCANS = 2  # the seed system's default


def parse_duration(value: Any) -> int:
    """``3600``, ``"3600"``, ``"30s"``, ``"90m"``, ``"24h"``, ``"2d"``, ``"1h30m"`` → seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 90m, 24h or a number of seconds, not true/false")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(f"{n}{u}" for n, u in parts).lower() != text.lower():
            raise ValueError(f"{value!r} is not a duration: write e.g. 30s, 90m, 24h, 2d, 1h30m or seconds (3600)")
        seconds = sum(int(n) * _UNIT_SECONDS[u.lower()] for n, u in parts)
    else:
        raise ValueError(f"{value!r} is not a duration: write e.g. 30s, 90m, 24h, 2d, 1h30m or seconds (3600)")
    if seconds < 1:
        raise ValueError("must be at least 1 second")
    return seconds


def format_duration(seconds: int) -> str | int:
    """The shortest exact spelling of ``seconds`` (``86400`` → ``"1d"``, ``5400`` → ``"90m"``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and (unit != "d" or seconds > 2 * 86400):  # 24h reads better than 1d
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class ScannerSpec:
    name: str
    url: str
    kind: str = ScannerKind.NESSUS.value
    description: str = ""
    access_key: str = ""
    secret_key: str = ""
    username: str = ""
    password: str = ""
    verify_tls: bool = True
    ca_bundle: str = ""
    allow_plain_http: bool = False
    max_concurrent_scans: int = 1
    enabled: bool = True
    line: int | None = None

    CONFIG_FIELDS = (
        "kind", "url", "description", "access_key", "secret_key", "username", "password",
        "verify_tls", "ca_bundle", "allow_plain_http", "max_concurrent_scans", "enabled",
    )  # fmt: skip
    SECRET_FIELDS = ("access_key", "secret_key", "password")

    def __repr__(self) -> str:  # secrets never in reprs
        return f"ScannerSpec(name={self.name!r}, url={self.url!r})"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    description: str = ""
    enabled: bool = True
    scope: tuple[str, ...] = ()
    allow_any_target: bool = False
    max_queued: int = 0
    scan_timeout_seconds: int = DEFAULT_SCAN_TIMEOUT
    poll_interval_seconds: int = DEFAULT_POLL_INTERVAL
    allow_plain_http: bool = False
    scanners: tuple[ScannerSpec, ...] = ()
    line: int | None = None

    CONFIG_FIELDS = (
        "description", "enabled", "scope", "allow_any_target", "max_queued", "scan_timeout_seconds",
        "poll_interval_seconds", "allow_plain_http",
    )  # fmt: skip


@dataclass
class ScannerConfig:
    """A validated configuration: what the database should look like."""

    source: str
    pools: list[PoolSpec]
    legacy: bool = False
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------- value checkers
# Each takes (value, path) and returns the converted value or raises ValueError with the fix.


def _string(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _secret(value: Any) -> str:
    """A credential: its value (possibly from the environment) never appears in a message."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError(f"expected a string (got a {type(value).__name__}); quote it")
    return str(value)


def _slug(value: Any) -> str:
    text = _string(value)
    if not SLUG.match(text) or len(text) > 64:
        raise ValueError(f"{text!r} is not a valid name: use letters, digits, '-' and '_' (at most 64)")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
        return value.strip().lower() in {"true", "yes", "on", "1"}
    raise ValueError(f"expected true or false, got {value!r}")


def _int_min(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            number = int(value)
        else:
            raise ValueError(f"expected a whole number, got {value!r}")
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return check


def _url(value: Any) -> str:
    text = _string(value).strip().rstrip("/")
    problem = scanner_url_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def _kind(value: Any) -> str:
    text = _string(value)
    if text not in ScannerKind.values:
        raise ValueError(f"unknown scanner kind {text!r}: supported kinds are {', '.join(ScannerKind.values)}")
    return text


def _verify_tls(value: Any) -> tuple[bool, str]:
    """``true`` / ``false`` / a CA bundle path (→ verification on, with that bundle)."""
    if isinstance(value, bool):
        return value, ""
    text = _string(value).strip()
    if text.lower() in {"true", "yes", "on", "1"}:
        return True, ""
    if text.lower() in {"false", "no", "off", "0"}:
        return False, ""
    if not text:
        raise ValueError("expected true, false or the path of a CA bundle")
    problem = ca_bundle_problem(text)
    if problem:
        raise ValueError(problem)  # one message: it does not say whether the file exists
    return True, text


def _scope(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError('expected a list, e.g. ["10.20.0.0/16", "*.dmz.example.com"] ([] = no target allowed unless '
                         "allow_any_target: true)")
    problems = [p for p in (scope_entry_problem(item) for item in value) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(str(item).strip() for item in value)


POOL_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _slug,
    "description": _string,
    "enabled": _bool,
    "scope": _scope,
    "allow_any_target": _bool,
    "max_queued": _int_min(0),
    "scan_timeout": parse_duration,
    "poll_interval": parse_duration,
    "allow_plain_http": _bool,
    "scanners": lambda value: value,  # checked item by item
}
POOL_REQUIRED = ("name",)

SCANNER_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _slug,
    "kind": _kind,
    "url": _url,
    "description": _string,
    "access_key": _secret,
    "secret_key": _secret,
    "username": _secret,
    "password": _secret,
    "verify_tls": _verify_tls,
    "allow_plain_http": _bool,
    "max_concurrent_scans": _int_min(1),
    "enabled": _bool,
}
SCANNER_REQUIRED = ("name", "url")

# The seed system's scanner entries: instance_id is the name users pin; name is a display name.
LEGACY_SCANNER_KEYS: dict[str, Callable[[Any], Any]] = {
    **{key: check for key, check in SCANNER_KEYS.items() if key != "name"},
    "instance_id": _slug,
    "name": _string,
}
LEGACY_SCANNER_REQUIRED = ("instance_id", "url")


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown key{hint} (allowed: {', '.join(sorted(allowed))})"


def _check_mapping(
    doc: Document, value: Any, path: PathT, keys: dict[str, Callable[[Any], Any]], required: tuple[str, ...], what: str
) -> dict[str, Any] | None:
    """Check one mapping against its keys; returns the converted values (valid keys only)."""
    if not isinstance(value, dict):
        doc.problem(path, f"expected a mapping of {what} settings (key: value), got {type(value).__name__}")
        return None
    converted: dict[str, Any] = {}
    for key, raw in value.items():
        key_path = (*path, key)
        if key not in keys:
            doc.problem(key_path, _did_you_mean(key, list(keys)))
            continue
        try:
            converted[key] = keys[key](raw)
        except ValueError as exc:
            doc.problem(key_path, str(exc))
    for key in required:
        if key not in value:
            doc.problem(path, f"missing required key '{key}' in this {what}")
    return converted


def _scanner_spec(doc: Document, raw: Any, path: PathT, *, legacy: bool) -> ScannerSpec | None:
    keys, required = (LEGACY_SCANNER_KEYS, LEGACY_SCANNER_REQUIRED) if legacy else (SCANNER_KEYS, SCANNER_REQUIRED)
    values = _check_mapping(doc, raw, path, keys, required, "scanner")
    if values is None:
        return None
    if legacy:
        if "name" in values:
            values["description"] = values.pop("name")
        if "instance_id" in values:
            values["name"] = values.pop("instance_id")
        values.setdefault("max_concurrent_scans", LEGACY_DEFAULT_MAX_CONCURRENT_SCANS)
    if "verify_tls" in values:
        values["verify_tls"], values["ca_bundle"] = values["verify_tls"]
    if not all(key in values for key in ("name", "url")):
        return None
    problem = scanner_auth_problem(
        values.get("access_key", ""),
        values.get("secret_key", ""),
        values.get("username", ""),
        values.get("password", ""),
    )
    if problem:
        doc.problem(path, f"scanner {values['name']!r}: {problem}")
        return None
    return ScannerSpec(line=doc.line(path), **values)


def _pool_spec(doc: Document, raw: Any, path: PathT) -> PoolSpec | None:
    values = _check_mapping(doc, raw, path, POOL_KEYS, POOL_REQUIRED, "pool")
    if values is None:
        return None
    raw_scanners = values.pop("scanners", None) or []
    if not isinstance(raw_scanners, list):
        doc.problem((*path, "scanners"), "expected a list of scanners")
        raw_scanners = []
    scanners = [_scanner_spec(doc, item, (*path, "scanners", i), legacy=False) for i, item in enumerate(raw_scanners)]
    if "scan_timeout" in values:
        values["scan_timeout_seconds"] = values.pop("scan_timeout")
    if "poll_interval" in values:
        values["poll_interval_seconds"] = values.pop("poll_interval")
    if "name" not in values:
        return None
    return PoolSpec(line=doc.line(path), scanners=tuple(s for s in scanners if s), **values)


def _legacy_pools(doc: Document) -> list[PoolSpec | None]:
    pools: list[PoolSpec | None] = []
    for pool_name, entries in doc.data.items():
        path: PathT = (pool_name,)
        try:
            name = _slug(pool_name)
        except ValueError as exc:
            doc.problem(path, f"pool name: {exc}")
            continue
        if not isinstance(entries, list):
            doc.problem(
                path,
                "expected a list of scanners under the pool name (older format), or use the 'pools:' list format",
            )
            continue
        scanners = [_scanner_spec(doc, item, (*path, i), legacy=True) for i, item in enumerate(entries)]
        pools.append(PoolSpec(name=name, line=doc.line(path), scanners=tuple(s for s in scanners if s)))
    return pools


def validate(doc: Document, source: str) -> ScannerConfig:
    """Turn a parsed document into a :class:`ScannerConfig`, or raise :class:`ConfigError` with every problem."""
    data = doc.data
    legacy = False
    pools: list[PoolSpec | None] = []
    if not isinstance(data, dict):
        doc.problem((), "expected a mapping with a top-level 'pools:' list")
    elif "pools" in data:
        for key in data:
            if key != "pools":
                doc.problem((key,), "unknown top-level key (the file holds only 'pools:')")
        raw_pools = data["pools"]
        if not isinstance(raw_pools, list):
            doc.problem(("pools",), "expected a list of pools (each starting with '- name: ...')")
        else:
            pools = [_pool_spec(doc, item, ("pools", i)) for i, item in enumerate(raw_pools)]
    else:
        legacy = True
        pools = _legacy_pools(doc)

    valid = [pool for pool in pools if pool is not None]
    seen_pools: dict[str, PoolSpec] = {}
    seen_scanners: dict[str, tuple[str, ScannerSpec]] = {}
    warnings: list[str] = []
    for pool in valid:
        if pool.name in seen_pools:
            first = seen_pools[pool.name]
            doc.problems.append(Problem(f"duplicate pool name {pool.name!r} (first on line {first.line})", pool.line))
        seen_pools.setdefault(pool.name, pool)
        for scanner in pool.scanners:
            if scanner.name in seen_scanners:
                other_pool, first = seen_scanners[scanner.name]
                doc.problems.append(
                    Problem(
                        f"duplicate scanner name {scanner.name!r} (first on line {first.line}, pool {other_pool!r}); "
                        "scanner names are unique across all pools",
                        scanner.line,
                    )
                )
            seen_scanners.setdefault(scanner.name, (pool.name, scanner))
            problem = plain_http_problem(scanner.url, allowed=scanner.allow_plain_http or pool.allow_plain_http)
            if problem:
                doc.problems.append(Problem(f"scanner {scanner.name!r}: url {problem}", scanner.line, "url"))
    if doc.problems:
        raise ConfigError(source, sorted(doc.problems, key=lambda p: (p.line or 0, p.path)))
    return ScannerConfig(source=source, pools=valid, legacy=legacy, warnings=warnings)
