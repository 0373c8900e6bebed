"""The Nessus adapter: DESIGN §5 over the documented Nessus REST API (see docs/adapters.md)."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from scanners.adapters.base import (
    HealthReport,
    LaunchedScan,
    PermanentScannerError,
    RemoteScan,
    ResultsTooLargeError,
    ScanConflictError,
    ScanExportError,
    ScannerAdapter,
    ScanNotFoundError,
    ScanSpec,
    ScanState,
    TemplateNotFoundError,
    TransientScannerError,
    task_id_from_scan_name,
)
from scanners.adapters.nessus.client import NessusClient, response_json
from scanners.adapters.nessus.health import server_health
from scanners.adapters.nessus.payloads import scan_body, ssh_credential, template_name_for

if TYPE_CHECKING:
    from scanners.models import Scanner

log = logging.getLogger("scanpool.adapters.nessus")

TEMPLATE_CACHE_TTL = 300.0  # seconds; templates change only with a plugin feed update
_template_cache: dict[str, tuple[float, dict[str, str]]] = {}
_template_lock = threading.Lock()
EXPORT_FLOWS = ("auto", "token", "file")
DOWNLOAD_CHUNK = 64 * 1024
DEFAULT_MAX_RESULT_BYTES = 2 * 1024**3


class NessusAdapter(ScannerAdapter):
    def __init__(
        self,
        url: str,
        *,
        access_key: str = "",
        secret_key: str = "",
        username: str = "",
        password: str = "",
        verify_tls: bool = True,
        ca_bundle: str = "",
        name: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.25,
        export_flow: str = "auto",
        export_poll_interval: float = 0.5,
        export_timeout: float = 600.0,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_retry_wait: float = 5.0,
        retry_after_cap: float = 300.0,
    ) -> None:
        if export_flow not in EXPORT_FLOWS:
            raise ValueError(f"export_flow must be one of {EXPORT_FLOWS}, not {export_flow!r}")
        verify: bool | str = (ca_bundle or True) if verify_tls else False
        self.client = NessusClient(
            url, access_key=access_key, secret_key=secret_key, username=username, password=password,
            verify=verify, connect_timeout=connect_timeout, read_timeout=read_timeout, retries=retries,
            backoff=backoff, name=name, max_retry_wait=max_retry_wait, retry_after_cap=retry_after_cap,
        )
        self.url = self.client.url
        self.export_flow = export_flow
        self.export_poll_interval = export_poll_interval
        self.export_timeout = export_timeout
        self.max_result_bytes = max_result_bytes
        self._templates: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<NessusAdapter {self.url}>"

    @classmethod
    def from_scanner(cls, scanner: Scanner, **options: Any) -> NessusAdapter:
        """An adapter configured from the Scanner row (URL, credentials, TLS) and the HTTP timeout settings; a
        scanner's ``Retry-After`` is obeyed up to ``SCANPOOL_BREAKER_COOLDOWN`` seconds."""
        from django.conf import settings

        return cls(
            scanner.url,
            access_key=scanner.access_key or "",
            secret_key=scanner.secret_key or "",
            username=scanner.username or "",
            password=scanner.password or "",
            verify_tls=scanner.verify_tls,
            ca_bundle=scanner.ca_bundle or "",
            name=scanner.name,
            connect_timeout=settings.SCANPOOL_HTTP_CONNECT_TIMEOUT,
            read_timeout=settings.SCANPOOL_HTTP_READ_TIMEOUT,
            max_result_bytes=settings.SCANPOOL_MAX_RESULT_BYTES,
            retry_after_cap=settings.SCANPOOL_BREAKER_COOLDOWN,  # a scanner's Retry-After: one cooldown at most
            **options,
        )

    def close(self) -> None:
        self.client.close()

    # -------------------------------------------------------------------------------------- health

    def health(self) -> HealthReport:
        return server_health(self.client, self.url)

    # ----------------------------------------------------------------------------------- templates

    def templates(self, *, refresh: bool = False) -> dict[str, str]:
        """``{template name: uuid}`` from ``GET /editor/scan/templates``, cached per scanner URL."""
        now = time.monotonic()
        if self._templates is not None and not refresh:
            return self._templates
        with _template_lock:
            cached = _template_cache.get(self.url)
        if cached and cached[0] > now and not refresh:
            self._templates = cached[1]
            return cached[1]
        data = self.client.get_json("/editor/scan/templates", what="list the scan templates")
        found = {str(t["name"]): str(t["uuid"]) for t in data.get("templates") or [] if t.get("name") and t.get("uuid")}
        with _template_lock:
            _template_cache[self.url] = (now + TEMPLATE_CACHE_TTL, found)
        self._templates = found
        return found

    def template_uuid(self, name: str) -> str:
        uuid_ = self.templates().get(name) or self.templates(refresh=True).get(name)
        if not uuid_:
            raise TemplateNotFoundError(
                f"scanner {self.url} has no scan template named {name!r} (it has: "
                f"{', '.join(sorted(self.templates())) or 'none'}); update the scanner's plugins or pick another "
                "scan type", scanner=self.client.name,
            )
        return uuid_

    # -------------------------------------------------------------------------------------- scans

    def create_scan(self, spec: ScanSpec) -> int:
        template = self.template_uuid(template_name_for(spec.scan_type))
        ssh = ssh_credential(spec)
        if ssh is not None and ssh["auth_method"] == "public key":
            ssh["private_key"] = self._upload("ssh_key", ssh["private_key"].encode())
        body = scan_body(spec, template, ssh)
        resp = self.client.request("POST", "/scans", json=body, what="create the scan", safe=False)
        scan = response_json(resp).get("scan") or {}
        try:
            return int(scan["id"])
        except (KeyError, TypeError, ValueError):
            raise PermanentScannerError(
                f"scanner {self.url} answered the scan creation without a scan id", scanner=self.client.name
            ) from None

    def _upload(self, filename: str, content: bytes) -> str:
        resp = self.client.request("POST", "/file/upload", files={"Filedata": (filename, content)},
                                   data={"no_enc": "0"}, what="upload the SSH private key", safe=True)
        name = response_json(resp).get("fileuploaded")
        if not name:
            raise PermanentScannerError(f"scanner {self.url} did not accept the key upload", scanner=self.client.name)
        return str(name)

    def launch_scan(self, scan_id: int) -> LaunchedScan:
        resp = self.client.request("POST", f"/scans/{int(scan_id)}/launch", what=f"launch scan {scan_id}",
                                   safe=False, scan_id=scan_id)
        return LaunchedScan(scan_id=int(scan_id), scan_uuid=str(response_json(resp).get("scan_uuid") or ""))

    def scan_details(self, scan_id: int) -> dict[str, Any]:
        return self.client.get_json(f"/scans/{int(scan_id)}", what=f"read scan {scan_id}", scan_id=scan_id)

    def scan_state(self, scan_id: int) -> ScanState:
        details = self.scan_details(scan_id)
        info = details.get("info") or {}
        status = str(info.get("status") or "")
        if not status:  # never guess "empty": the caller would launch the scan again
            raise TransientScannerError(
                f"scanner {self.url} answered scan {scan_id}'s details without a status; it will be asked again",
                scanner=self.client.name,
            )
        run = str(info.get("uuid") or "")
        if run.startswith("template-"):  # a scan's own uuid before any run (Nessus lists it so): no run to compare
            run = ""
        return ScanState(status=status, progress=_progress(status, info, details.get("hosts") or []), uuid=run)

    def stop_scan(self, scan_id: int) -> bool:
        try:
            self.client.request("POST", f"/scans/{int(scan_id)}/stop", what=f"stop scan {scan_id}", safe=True,
                                scan_id=scan_id)
        except (ScanConflictError, ScanNotFoundError) as exc:  # 409: not active (ended); 404: gone
            log.info("nessus %s: stop of scan %s not needed: %s", self.url, scan_id, exc.message)
            return False
        return True

    def delete_scan(self, scan_id: int, *, stop_wait: float = 15.0) -> None:
        path = f"/scans/{int(scan_id)}"
        try:
            self.client.request("DELETE", path, what=f"delete scan {scan_id}", safe=True, scan_id=scan_id)
        except ScanNotFoundError:
            return
        except ScanConflictError:  # still running: stop it, wait until it ended, delete again
            self.stop_scan(scan_id)
            deadline = time.monotonic() + stop_wait
            while self.scan_state(scan_id).status not in {"completed", "canceled", "aborted", "imported", "empty"}:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
            try:
                self.client.request("DELETE", path, what=f"delete scan {scan_id}", safe=True, scan_id=scan_id)
            except ScanNotFoundError:
                return

    def list_scans(self) -> list[RemoteScan]:
        data = self.client.get_json("/scans", what="list the scans")
        return [
            RemoteScan(scan_id=int(s["id"]), name=str(s.get("name") or ""), status=str(s.get("status") or ""),
                       task_id=task_id_from_scan_name(str(s.get("name") or "")))
            for s in data.get("scans") or []  # Nessus answers "scans": null when there are none
        ]

    # -------------------------------------------------------------------------------------- export

    def export_results(self, scan_id: int, destination: Path) -> Path:
        """Export ``.nessus`` (token flow, else the older file flow) and stream it to ``destination``."""
        resp = self.client.request("POST", f"/scans/{int(scan_id)}/export", json={"format": "nessus"},
                                   what=f"export scan {scan_id}", safe=True, scan_id=scan_id)
        answer = response_json(resp)
        file_id, token = answer.get("file"), answer.get("token")
        use_token = bool(token) and self.export_flow in {"auto", "token"}
        if self.export_flow == "token" and not token:
            raise PermanentScannerError(
                f"scanner {self.url} offers no export token (an older Nessus); use export_flow 'auto' or 'file'",
                scanner=self.client.name,
            )
        if use_token:
            base = f"/tokens/{token}"
            try:
                self._wait_export(f"{base}/status", scan_id)
            except PermanentScannerError as exc:
                if exc.status_code != 404 or self.export_flow == "token" or file_id is None:
                    raise
                log.info("nessus %s: no /tokens endpoint, falling back to the file export flow", self.url)
                use_token = False
        if not use_token:
            if file_id is None:
                raise PermanentScannerError(f"scanner {self.url} answered the export without a file id",
                                            scanner=self.client.name)
            base = f"/scans/{int(scan_id)}/export/{file_id}"
            self._wait_export(f"{base}/status", scan_id)
        return self._download(f"{base}/download", Path(destination), scan_id)

    def _wait_export(self, path: str, scan_id: int) -> None:
        deadline = time.monotonic() + self.export_timeout
        while True:
            resp = self.client.request("GET", path, what=f"read the export status of scan {scan_id}", safe=True)
            status = str(response_json(resp).get("status") or "")
            if status == "ready":
                return
            if status == "error":
                raise ScanExportError(
                    f"scanner {self.url} failed to prepare the export of scan {scan_id} (status 'error'); it will "
                    "be retried; if it keeps failing, check the scanner's disk space and logs",
                    scanner=self.client.name,
                )
            if time.monotonic() > deadline:
                raise ScanExportError(
                    f"the export of scan {scan_id} on {self.url} was not ready after {self.export_timeout:g}s",
                    scanner=self.client.name,
                )
            time.sleep(self.export_poll_interval)

    def _download(self, path: str, destination: Path, scan_id: int) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.part")
        attempts = 1 + self.client.retries
        for attempt in range(attempts):
            try:
                resp = self.client.request("GET", path, what=f"download the export of scan {scan_id}", safe=True,
                                           stream=True)
                with resp, partial.open("wb") as out:
                    self._check_size(resp.headers.get("Content-Length"), scan_id)
                    written = 0
                    for chunk in resp.iter_content(DOWNLOAD_CHUNK):
                        written += len(chunk)
                        self._check_size(written, scan_id)  # streaming stops at the cap
                        out.write(chunk)
                os.replace(partial, destination)
                return destination
            except requests.RequestException as exc:  # broke off mid-stream: start the download again
                partial.unlink(missing_ok=True)
                if attempt == attempts - 1:
                    raise TransientScannerError(
                        f"the download of scan {scan_id}'s export from {self.url} broke off ({type(exc).__name__}); "
                        "it will be retried", scanner=self.client.name,
                    ) from None
                time.sleep(self.client.backoff * (2**attempt))
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_size(self, size: int | str | None, scan_id: int) -> None:
        """Raise :class:`ResultsTooLargeError` when ``size`` (bytes so far, or a Content-Length) passes the cap."""
        try:
            size = int(size) if size is not None else 0
        except ValueError:
            return
        if size > self.max_result_bytes:
            raise ResultsTooLargeError(
                f"the export of scan {scan_id} from {self.url} is larger than SCANPOOL_MAX_RESULT_BYTES "
                f"({self.max_result_bytes} bytes); the download was stopped and the partial file removed. Raise "
                "SCANPOOL_MAX_RESULT_BYTES if results this large are expected, or scan fewer targets per task",
                scanner=self.client.name,
            )






def _progress(status: str, info: dict[str, Any], hosts: list[dict[str, Any]]) -> int:
    if status in {"completed", "imported"}:
        return 100
    value = info.get("progress")
    if isinstance(value, int | float):
        return max(0, min(100, int(value)))
    shares = [
        h["scanprogresscurrent"] / h["scanprogresstotal"]
        for h in hosts
        if isinstance(h.get("scanprogresscurrent"), int | float) and h.get("scanprogresstotal")
    ]
    return int(100 * sum(shares) / len(shares)) if shares else 0
