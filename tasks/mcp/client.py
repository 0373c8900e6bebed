"""The MCP server's only way into scanpool: an HTTP client of the REST API v1, holding one API token.

It imports nothing from Django, so the MCP server can run on another machine than scanpool. Every
non-2xx answer becomes :class:`ApiError` carrying the API's ``code``, ``message`` and ``field``; a
network failure or an answer that is not the API's JSON is an ``ApiError`` too (``api_unreachable``,
``bad_response``), never a traceback. Redirects are not followed: the token goes to the configured URL only.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0


class ConfigError(Exception):
    """The MCP server's configuration is unusable (the message says which variable and the fix)."""


@dataclass
class ApiError(Exception):
    """A refused or failed API call, with the API's own error code and message."""

    status: int | None
    code: str
    message: str
    field: str | None = None
    details: Any = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "http_status": self.status}
        if self.field:
            error["field"] = self.field
        if self.details:
            error["details"] = self.details
        return error


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (the names that never leave the machine)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ApiConfig:
    url: str
    token: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    # The site's public address when ``url`` is a private hop behind its TLS proxy (Docker Compose: http://web:8000):
    # requests then carry what the proxy would send, its Host and X-Forwarded-Proto (docs/mcp.md).
    public_url: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ApiConfig:
        """``SCANPOOL_API_URL`` (default http://127.0.0.1:8000) and ``SCANPOOL_API_TOKEN`` (or a file
        named by ``SCANPOOL_API_TOKEN_FILE``)."""
        env = os.environ if environ is None else environ
        url = normalize_api_url(env.get("SCANPOOL_API_URL") or DEFAULT_API_URL)
        token = (env.get("SCANPOOL_API_TOKEN") or "").strip()
        token_file = env.get("SCANPOOL_API_TOKEN_FILE")
        if not token and token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"SCANPOOL_API_TOKEN_FILE: cannot read {token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError("SCANPOOL_API_TOKEN is not set: give the MCP server an API token of scanpool "
                              "(manage.py create_api_token USER --name mcp-agent prints one), or set "
                              "SCANPOOL_API_TOKEN_FILE to a file that holds it")
        try:
            timeout = float(env.get("SCANPOOL_API_TIMEOUT") or DEFAULT_TIMEOUT)
        except ValueError:
            raise ConfigError("SCANPOOL_API_TIMEOUT: give a number of seconds, e.g. 30") from None
        public = env.get("SCANPOOL_API_PUBLIC_URL") or ""
        public_url = normalize_api_url(public, "SCANPOOL_API_PUBLIC_URL") if public.strip() else ""
        return cls(url=url, token=token, timeout=timeout, public_url=public_url)

    @property
    def sends_token_in_clear(self) -> bool:
        parts = urlsplit(self.url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def normalize_api_url(raw: str, var: str = "SCANPOOL_API_URL") -> str:
    """The site's base URL: ``https://scanpool.example.com`` and ``…/api/v1/`` both give the former."""
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{var}: {raw!r} is not an http(s) URL: use e.g. http://127.0.0.1:8000")
    if parts.username or parts.password:
        raise ConfigError(f"{var}: put the token in SCANPOOL_API_TOKEN, not in the URL")
    for suffix in ("/api/v1", "/api"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    return url


def cursor_of(next_url: str | None) -> str | None:
    """The ``cursor`` parameter of a DRF cursor-pagination link."""
    if not next_url:
        return None
    values = parse_qs(urlsplit(next_url).query).get("cursor")
    return values[0] if values else None


class ScanpoolApi:
    """Small synchronous client of ``/api/v1/`` (the SDK runs sync tools on worker threads)."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.base = f"{config.url}/api/v1"
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token {config.token}", "Accept": "application/json",
                                     "User-Agent": "scanpool-mcp"})
        if config.public_url:
            public = urlsplit(config.public_url)
            self.session.headers.update({"Host": public.netloc, "X-Forwarded-Proto": public.scheme})
        self.session.trust_env = False  # no proxy from the environment sees the token

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------------------------------ transport

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request_with_status(method, path, **kwargs)[1]

    def request_with_status(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                            json: Any = None, files: Any = None, data: Any = None) -> tuple[int, Any]:
        """(HTTP status, JSON body) of a successful call; :class:`ApiError` otherwise."""
        url = f"{self.base}/{path.lstrip('/')}"
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            response = self.session.request(method, url, params=clean, json=json, files=files, data=data,
                                            timeout=self.config.timeout, allow_redirects=False)
        except requests.Timeout:
            raise ApiError(None, "api_timeout", f"scanpool's API at {self.config.url} did not answer within "
                           f"{self.config.timeout:g} s: try again, or raise SCANPOOL_API_TIMEOUT") from None
        except requests.RequestException as exc:
            raise ApiError(None, "api_unreachable", f"cannot reach scanpool's API at {self.config.url} "
                           f"({type(exc).__name__}): check SCANPOOL_API_URL and that scanpool runs") from None
        if 300 <= response.status_code < 400:
            raise ApiError(response.status_code, "redirect_refused",
                           f"the API answered a redirect to {response.headers.get('Location', '?')}; the MCP server "
                           "follows none (the token goes to SCANPOOL_API_URL only): fix SCANPOOL_API_URL")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and error.get("code"):
                raise ApiError(response.status_code, str(error["code"]), str(error.get("message", "")),
                               error.get("field"), error.get("details"))
            raise ApiError(response.status_code, "bad_response", f"HTTP {response.status_code} from {url} without "
                           "scanpool's error document: is SCANPOOL_API_URL scanpool's address?")
        if body is None:
            raise ApiError(response.status_code, "bad_response", f"the answer of {url} is not JSON: is "
                           "SCANPOOL_API_URL scanpool's address?")
        return response.status_code, body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    # ------------------------------------------------------------------------------------------ endpoints

    def scan(self, task_id: str, *, events: bool = True) -> dict[str, Any]:
        return self.get(f"scans/{task_id_of(task_id)}/", events=None if events else 0)

    def scans(self, **params: Any) -> dict[str, Any]:
        return self.get("scans/", **params)

    def cancel(self, task_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.post(f"scans/{task_id_of(task_id)}/cancel/", {"reason": reason} if reason else {})

    def results(self, task_id: str, **params: Any) -> dict[str, Any]:
        return self.get(f"scans/{task_id_of(task_id)}/results/", **params)

    def hosts(self, task_id: str, **params: Any) -> dict[str, Any]:
        return self.get(f"scans/{task_id_of(task_id)}/hosts/", **params)

    def pools(self) -> list[dict[str, Any]]:
        return self.get("pools/")

    def pool(self, name: str) -> dict[str, Any]:
        return self.get(f"pools/{_name('scanner_pool', name)}/")

    def scanners(self) -> list[dict[str, Any]]:
        return self.get("scanners/")

    def validate(self, path: Path, scan_type: str | None = None) -> dict[str, Any]:
        with path.open("rb") as handle:
            return self.request("POST", "validate/", files={"file": (path.name, handle, "application/xml")},
                                data={"scan_type": scan_type} if scan_type else None)


def task_id_of(value: str) -> str:
    """A task id as the URL carries it (a UUID, lower case with dashes): anything else cannot name a task."""
    text = str(value).strip()
    try:
        if len(text) > 45:
            raise ValueError(text)
        return str(uuid.UUID(text))  # also upper case, {…}, urn:uuid:… and 32 hex digits without dashes
    except ValueError:
        raise ApiError(None, "invalid", "task_id: not a task id: give the task_id a run_*_scan or list_tasks "
                       "answer returned (a UUID such as 3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21)", "task_id") from None


def _name(field_name: str, value: str) -> str:
    text = str(value).strip()
    if not text or len(text) > 64 or any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in text):
        raise ApiError(None, "invalid", f"{field_name}: {value!r} is not a pool or scanner name (letters, digits, "
                       "'-' and '_'): list_pools shows the names", field_name)
    return text
