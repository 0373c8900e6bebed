"""HTTP layer of the Nessus adapter: one ``requests.Session``, auth, timeouts, safe retries, error mapping.

* Every call has a connect and a read timeout.
* Redirects are never followed: keys, session cookies and login bodies go to the configured URL only,
  and a 3xx answer is a permanent error naming the target (``Location``) so an operator can fix the URL.
* Auth by API keys (``X-ApiKeys``) when both keys are set, else a session login (``POST /session``,
  ``X-Cookie: token=…``) renewed once when the scanner answers 401.
* Transient failures (connection error, timeout, an answer cut off mid-body, 5xx, 429) are retried with a
  short exponential backoff **only** for calls marked ``safe`` (reads, status, export status, download, stop,
  delete). Create and launch are never retried blindly: a lost answer is resolved by the caller from the
  scanner's state.
* A 429 or 503 with a ``Retry-After`` (:mod:`scanners.adapters.retry_after`, capped at ``retry_after_cap``) is
  obeyed: an in-line retry waits at least that long, and a wait longer than ``max_retry_wait`` is not waited
  in-line at all — the call gives up at once with a transient error carrying ``retry_after`` for its caller
  (the engine's step retry) to schedule.
* Every failure leaves as a typed :class:`~scanners.adapters.base.ScannerError` whose message says what
  happened, on which scanner, and what to do. No secret ever enters a message or a log line.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import InsecureRequestWarning

from scanners.adapters.base import (
    InvalidScanRequestError,
    PermanentScannerError,
    ScanConflictError,
    ScannerAuthError,
    ScannerError,
    ScannerNotReadyError,
    ScannerUnlicensedError,
    ScanNotFoundError,
    TransientScannerError,
)
from scanners.adapters.retry_after import retry_after_of

log = logging.getLogger("scanpool.adapters.nessus")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_TOKEN_PATH = re.compile(r"/tokens/[^/]+")

# Session tokens shared by the clients of one process (workers build an adapter per step): one login per
# scanner and user instead of one per poll. A stale token costs one 401 and a fresh login.
_session_tokens: dict[tuple[str, str, str], str] = {}
_session_lock = threading.Lock()


class NessusClient:
    def __init__(
        self,
        url: str,
        *,
        access_key: str = "",
        secret_key: str = "",
        username: str = "",
        password: str = "",
        verify: bool | str = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.25,
        name: str = "",
        max_retry_wait: float = 5.0,
        retry_after_cap: float = 300.0,
    ) -> None:
        split = urlsplit(url.rstrip("/"))
        if split.username or split.password:  # credentials never live in (or leak from) the URL
            raise PermanentScannerError(
                "the scanner URL must not contain a user or password: remove them from the URL and set the "
                "scanner's username/password or API keys instead", scanner=name,
            )
        self.url = url.rstrip("/")
        self.name = name or self.url
        if verify is False:
            _verification_off(split.hostname or "", self.name, self.url)
        self._access_key = access_key
        self._secret_key = secret_key
        self._username = username
        self._password = password
        self.timeout = (connect_timeout, read_timeout)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait  # longest Retry-After waited in-line (longer: give up, let the caller)
        self.retry_after_cap = retry_after_cap  # longest Retry-After obeyed at all (a hostile scanner's "wait a day")
        self.session = requests.Session()
        # Passed on every call: a Session-level ``verify`` loses to REQUESTS_CA_BUNDLE (psf/requests#3829).
        self.verify = verify
        self.session.headers.update({"Accept": "application/json", "User-Agent": "scanpool-nessus-adapter"})
        self._token = ""
        if self.uses_api_keys:
            self.session.headers["X-ApiKeys"] = f"accessKey={access_key}; secretKey={secret_key}"
        elif username and password:
            with _session_lock:
                cached = _session_tokens.get(self._session_key)
            if cached:
                self._use_token(cached)

    def __repr__(self) -> str:  # never show keys or passwords
        return f"<NessusClient {self.url} auth={'api_keys' if self.uses_api_keys else 'session'}>"

    @property
    def uses_api_keys(self) -> bool:
        return bool(self._access_key and self._secret_key)

    # ---------------------------------------------------------------------------------------- auth

    def login(self) -> None:
        """``POST /session`` with the configured user; keeps the token for ``X-Cookie``."""
        if not self._username or not self._password:
            raise ScannerAuthError(
                f"no API keys and no username/password are configured for scanner {self.url}; set either "
                "access_key + secret_key or username + password on the scanner",
                scanner=self.name,
            )
        self.session.headers.pop("X-Cookie", None)
        resp = self._send("POST", "/session", json={"username": self._username, "password": self._password},
                          safe=True, what="log in")
        if resp.status_code == 401:
            raise ScannerAuthError(
                f"scanner {self.url} rejected the login of user {self._username!r} (HTTP 401); check the "
                "username and password configured for this scanner",
                status_code=401, scanner=self.name,
            )
        self._raise_for(resp, "log in")
        token = response_json(resp).get("token")
        if not token:
            raise PermanentScannerError(
                f"scanner {self.url} answered the login without a session token; is this URL a Nessus scanner?",
                scanner=self.name,
            )
        self._use_token(str(token))
        with _session_lock:
            _session_tokens[self._session_key] = self._token

    @property
    def _session_key(self) -> tuple[str, str, str]:
        return self.url, self._username, hashlib.sha256(self._password.encode()).hexdigest()

    def _use_token(self, token: str) -> None:
        self._token = token
        self.session.headers["X-Cookie"] = f"token={token}"

    def logout(self) -> None:
        """End the session on the scanner (``DELETE /session``) and forget the shared token."""
        if self._token:
            with _session_lock:
                if _session_tokens.get(self._session_key) == self._token:
                    del _session_tokens[self._session_key]
            try:
                self.session.delete(f"{self.url}/session", timeout=self.timeout, verify=self.verify,
                                    allow_redirects=False)
            except (requests.RequestException, OSError):
                pass
            self._token = ""
            self.session.headers.pop("X-Cookie", None)

    def close(self) -> None:
        """Close connections; the session stays open for the next client of this process (see above)."""
        self.session.close()

    # ------------------------------------------------------------------------------------- requests

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        safe: bool,
        auth: bool = True,
        scan_id: int | None = None,
        ok: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> requests.Response:
        """Send with auth; re-login once on 401 (session mode); map errors unless status is in ``ok``."""
        if auth and not self.uses_api_keys and not self._token:
            self.login()
        resp = self._send(method, path, safe=safe, what=what, **kwargs)
        if resp.status_code == 401 and auth and not self.uses_api_keys:
            log.info("nessus %s: session rejected (401) on %s %s; logging in again", self.url, method, _safe(path))
            resp.close()
            self.login()  # a 401 means the call was refused before it ran: sending it again is safe
            resp = self._send(method, path, safe=safe, what=what, **kwargs)
        if resp.status_code not in ok:
            self._raise_for(resp, what, scan_id=scan_id)
        return resp

    def get_json(self, path: str, *, what: str, scan_id: int | None = None, **kwargs: Any) -> dict[str, Any]:
        return response_json(self.request("GET", path, what=what, safe=True, scan_id=scan_id, **kwargs))

    def _send(self, method: str, path: str, *, safe: bool, what: str, **kwargs: Any) -> requests.Response:
        attempts = 1 + (self.retries if safe else 0)
        url = f"{self.url}{path}"
        for attempt in range(attempts):
            last, asked = attempt == attempts - 1, None  # asked: the wait this attempt's answer asked for
            try:
                resp = self.session.request(method, url, timeout=self.timeout, verify=self.verify,
                                            allow_redirects=False, **kwargs)
            except requests.exceptions.SSLError:
                raise PermanentScannerError(
                    f"TLS verification of scanner {self.url} failed while trying to {what}; give this scanner the "
                    "CA bundle that signed its certificate (ca_bundle) or, on a trusted network, turn verify_tls off",
                    scanner=self.name,
                ) from None
            except requests.exceptions.ConnectTimeout:
                if last:
                    reason = f"no connection within {self.timeout[0]:g}s"
                    raise self._transient(what, reason, safe, sent=False) from None
            except requests.Timeout as exc:
                if last:
                    raise self._transient(what, f"no answer within {self.timeout[1]:g}s ({type(exc).__name__})",
                                          safe) from None
            except requests.ConnectionError as exc:
                if last:
                    reason = _reason(exc)
                    raise self._transient(what, f"connection failed ({reason})", safe,
                                          sent=reason != "connection refused") from None
            except requests.exceptions.ChunkedEncodingError:  # the answer broke off mid-body: the call was sent
                if last:
                    raise self._transient(what, "the answer broke off before its end", safe) from None
            except requests.RequestException as exc:
                raise PermanentScannerError(
                    f"could not {what} on {self.url}: {type(exc).__name__}", scanner=self.name
                ) from None
            except OSError:  # requests' own check of ``verify``: the CA bundle vanished or is unreadable
                raise PermanentScannerError(
                    f"the CA bundle of scanner {self.name} is not a usable CA bundle (needed to {what}); fix the "
                    "scanner's ca_bundle (a readable PEM file with the CA certificates) on the machine the workers "
                    "run on", scanner=self.name,
                ) from None
            else:
                if resp.is_redirect or 300 <= resp.status_code < 400:
                    self._refuse_redirect(resp, method, path, what)
                asked = self._retry_after(resp)
                if resp.status_code not in TRANSIENT_STATUSES or last or (asked or 0) > self.max_retry_wait:
                    log.debug("nessus %s %s %s -> %s", self.url, method, _safe(path), resp.status_code)
                    return resp  # a longer Retry-After is not waited in-line: the caller schedules the retry
                resp.close()
            delay = max(self.backoff * (2**attempt), asked or 0)
            log.info("nessus %s: transient failure on %s %s, retry %d/%d in %.2fs",
                     self.url, method, _safe(path), attempt + 1, attempts - 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_after(self, resp: requests.Response) -> float | None:
        return retry_after_of(resp.status_code, resp.headers, cap=self.retry_after_cap)

    def _refuse_redirect(self, resp: requests.Response, method: str, path: str, what: str) -> None:
        """A 3xx is never followed (it would carry keys, cookie or login body to another host): fail clearly."""
        location = _safe(_without_userinfo(resp.headers.get("Location", "")))[:300] or "no Location header"
        code = resp.status_code
        resp.close()
        log.warning("nessus %s: %s %s answered HTTP %s redirect to %s; not followed", self.url, method, _safe(path),
                    code, location)
        raise PermanentScannerError(
            f"scanner {self.url} answered HTTP {code} (redirect to {location}) while trying to {what}; scanpool "
            "never follows redirects, so credentials go only to the configured URL: set the scanner's URL to the "
            "address that answers directly",
            status_code=code, scanner=self.name,
        )

    def _transient(self, what: str, reason: str, safe: bool, sent: bool = True) -> TransientScannerError:
        """``sent``: the request may have reached the scanner (an unsafe call's outcome is then unknown)."""
        hint = (
            "the outcome is unknown: check the scan's state on the scanner before trying again"
            if sent and not safe
            else "it will be retried later; check that the scanner is running and reachable"
        )
        return TransientScannerError(f"could not {what} on {self.url}: {reason}; {hint}", scanner=self.name)

    def _raise_for(self, resp: requests.Response, what: str, *, scan_id: int | None = None) -> None:
        code = resp.status_code
        if code < 400:
            return
        detail = _error_text(resp)
        asked = self._retry_after(resp)
        wait = "" if asked is None else (f"; it asked to wait {asked:.0f}s (Retry-After): scanpool does not call it "
                                         "again before then")
        where = f"{self.url}"
        message: str
        exc_type: type[ScannerError]
        if code == 401:
            exc_type = ScannerAuthError
            message = (
                f"scanner {where} rejected scanpool's API keys (HTTP 401) while trying to {what}; check the access "
                "and secret keys configured for this scanner"
                if self.uses_api_keys
                else f"scanner {where} rejected the session again after a fresh login (HTTP 401) while trying to "
                f"{what}; check the user's permissions on the scanner"
            )
        elif code == 403:
            exc_type = PermanentScannerError
            message = (f"scanner {where} refused to {what} (HTTP 403 forbidden: {detail}); give scanpool's "
                       "account the permission on the scanner")
        elif code == 404 and scan_id is not None:
            exc_type = ScanNotFoundError
            message = (f"scan {scan_id} does not exist on scanner {where} (HTTP 404) while trying to {what}; it "
                       "was deleted on the scanner or belongs to another scanner")
        elif code == 404:
            exc_type = PermanentScannerError
            message = (f"scanner {where} has no such endpoint (HTTP 404) while trying to {what}; check that the "
                       "URL points at a Nessus scanner (e.g. https://host:8834)")
        elif code == 409:
            exc_type = ScanConflictError
            message = f"scanner {where} refused to {what} in the scan's current state (HTTP 409: {detail})"
        elif code == 412:
            exc_type = ScannerUnlicensedError
            message = (f"scanner {where} says 'API is not available' (HTTP 412) while trying to {what}: its "
                       "edition has no scan API (Nessus Professional, Expert and Essentials refuse scan writes since "
                       "Nessus 7); drive a Nessus Manager (or Tenable Vulnerability Management / Security Center) "
                       "instead, or disable this scanner")
        elif code == 400:
            exc_type = InvalidScanRequestError
            message = (f"scanner {where} refused to {what} (HTTP 400: {detail}); check the scan's targets and "
                       "credentials")
        elif code == 503 and "not ready" in detail.lower():
            exc_type = ScannerNotReadyError
            message = f"scanner {where} is not ready (HTTP 503: {detail}); wait until its plugins are compiled{wait}"
        elif code in TRANSIENT_STATUSES:
            exc_type = TransientScannerError
            message = (f"scanner {where} answered HTTP {code} while trying to {what} ({detail}){wait}; it will be "
                       "retried later")
        else:
            exc_type = PermanentScannerError
            message = f"scanner {where} answered HTTP {code} while trying to {what} ({detail})"
        resp.close()
        raise exc_type(message, status_code=code, scanner=self.name, retry_after=asked)


_unverified_scanners: set[tuple[str, str]] = set()


def _verification_off(host: str, name: str, url: str) -> None:
    """Say once per scanner that TLS verification is off (an operator's choice) instead of urllib3 warning
    on every request to it; other hosts keep their warnings."""
    with _session_lock:
        first = (name, url) not in _unverified_scanners
        _unverified_scanners.add((name, url))
    if first:
        log.warning("TLS verification is turned off for scanner %s (%s, verify_tls false): its certificate is "
                    "not checked", name, url)
    # Re-added every time (warnings de-duplicates it): a warnings.catch_warnings() block may have dropped it.
    warnings.filterwarnings("ignore", category=InsecureRequestWarning, message=rf".*host '{re.escape(host)}'")


def _safe(path: str) -> str:
    """``path`` for logs: export tokens (bearer tokens for a download) are masked."""
    return _TOKEN_PATH.sub("/tokens/…", path)


def _without_userinfo(location: str) -> str:
    """A Location for messages: any ``user:password@`` in it is dropped."""
    parts = urlsplit(location)
    if parts.username is None and parts.password is None:
        return location
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def response_json(resp: requests.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


def _error_text(resp: requests.Response) -> str:
    try:
        data = resp.json()
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])[:200]
    except ValueError:
        pass
    return (resp.reason or "no detail")[:200]


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "Connection reset",
                   "Remote end closed connection"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
