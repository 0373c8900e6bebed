"""A Nessus scanner's health check (``NessusAdapter.health``): server status, scanpool's login, the licence."""

from __future__ import annotations

from typing import Any

from scanners.adapters.base import HealthReport, ScannerAuthError, ScannerError, ScannerUnlicensedError
from scanners.adapters.nessus.client import NessusClient, response_json
from scanners.adapters.retry_after import retry_after_of
from scanners.models import Health


def server_health(client: NessusClient, url: str) -> HealthReport:
    """The scanner's health (``NessusAdapter.health``): never raises; a 429/503 ``Retry-After`` answered to the
    check is in the report's ``retry_after``."""
    try:
        resp = client.request("GET", "/server/status", what="read the server status", safe=True,
                          auth=False, ok=frozenset({503}))
    except ScannerError as exc:
        return HealthReport(_unhealthy(exc), detail=exc.message, retry_after=exc.retry_after)
    asked = retry_after_of(resp.status_code, resp.headers, cap=client.retry_after_cap)  # 503 "starting"
    if asked is not None:
        return HealthReport(Health.NOT_READY, retry_after=asked,
                            detail=f"scanner {url} answered HTTP {resp.status_code} to /server/status and "
                            f"asked to wait {asked:.0f}s (Retry-After): scanpool does not call it before then")
    status = response_json(resp)
    state = str(status.get("status") or ("ready" if resp.status_code == 200 else ""))
    if not state:
        return HealthReport(Health.NOT_READY, detail=f"scanner {url} answered HTTP {resp.status_code} "
                            "to /server/status without a status; it may be starting")
    if state != "ready":
        progress = status.get("progress")
        detail = f"scanner {url} is {state}" + (f" ({progress} %)" if progress is not None else "")
        return HealthReport(Health.NOT_READY, detail=detail + "; plugins are compiling or it is starting")
    try:
        # /server/properties answers anonymous callers too (without the licence): prove the login first.
        client.get_json("/session", what="check scanpool's login")
        props = client.get_json("/server/properties", what="read the server properties")
    except ScannerUnlicensedError as exc:
        return HealthReport(Health.UNLICENSED, detail=exc.message)
    except ScannerAuthError as exc:
        return HealthReport(Health.AUTH_FAILED, detail=exc.message)
    except ScannerError as exc:
        return HealthReport(_unhealthy(exc), detail=exc.message, retry_after=exc.retry_after)
    version = str(props.get("server_version") or props.get("nessus_ui_version") or "")
    license_info = _licence(props)
    if license_info.get("scan_api") is False:
        return HealthReport(
            Health.UNLICENSED, version=version, license=license_info,
            detail=_no_scan_api_reason(url, license_info),
        )
    return HealthReport(Health.READY, detail="ready", version=version, license=license_info)


def _no_scan_api_reason(url: str, license_info: dict[str, Any]) -> str:
    """Why a scanner without the scan API is never chosen, in words an operator can act on."""
    edition = license_info.get("name") or "this licence"
    return (
        f"{edition} has no scan API (scan_api false): since Nessus 7, Professional, Expert and Essentials "
        "answer 412 'API is not available' to scan creation and launch, so scanpool cannot run scans on "
        f"{url}. Use Nessus Manager (or Tenable Vulnerability Management / Security Center) for API scans."
    )


def _unhealthy(exc: ScannerError) -> str:
    """``unreachable`` when no answer came back (connection, timeout, TLS), else ``not_ready``."""
    return Health.NOT_READY if exc.status_code is not None else Health.UNREACHABLE


def _licence(props: dict[str, Any]) -> dict[str, Any]:
    lic = props.get("license") or {}
    features = lic.get("features") or {}
    info: dict[str, Any] = {
        "type": lic.get("type") or props.get("nessus_type") or "",
        "name": lic.get("name") or props.get("nessus_type") or "",
        "expiration_date": lic.get("expiration_date") or props.get("expiration"),
        "ips": lic.get("ips"),
    }
    if "scan_api" in features:
        info["scan_api"] = bool(features["scan_api"])
    return info
