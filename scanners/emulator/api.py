"""The Nessus REST endpoints the emulator serves, with Tenable's documented request/response shapes."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from scanners.emulator import report
from scanners.emulator.editions import EDITIONS
from scanners.emulator.http import HttpError, Request, Response, json_response
from scanners.emulator.instance import TEMPLATES, Instance, session_token
from scanners.emulator.plugins import plugin_feed_version
from scanners.emulator.scans import ACTIVE, FINAL, Run, Scan, expand_targets, new_run
from scanners.emulator.scenario import CredentialError, scenario_for

Handler = Callable[[Instance, Request], Response]


# ----------------------------------------------------------------------------------- session / server


def post_session(inst: Instance, req: Request) -> Response:
    data = req.json()
    token = inst.login(str(data.get("username") or ""), str(data.get("password") or ""))
    if token is None:
        raise HttpError(401, "Invalid Credentials")
    return json_response(200, {"token": token})


def delete_session(inst: Instance, req: Request) -> Response:
    inst.logout(session_token(req.headers.get("X-Cookie")))
    return Response(200)


def get_session(inst: Instance, req: Request) -> Response:
    return json_response(200, {"id": 1, "username": inst.config.username, "name": inst.config.username,
                               "email": "", "type": "local", "permissions": 128, "lastlogin": int(time.time()),
                               "container_id": 0, "groups": None})


def server_status(inst: Instance, req: Request) -> Response:
    if inst.faults.not_ready:
        return json_response(503, {"code": 503, "status": "loading", "progress": 42,
                                   "detailed_status": {"login_status": "allow", "feed_status": {"status": "ready"},
                                                       "db_status": {"status": "ready"},
                                                       "engine_status": {"status": "loading", "progress": 42}}})
    return json_response(200, {"code": 200, "status": "ready", "progress": None})


def server_properties(inst: Instance, req: Request, authenticated: bool = False) -> Response:
    version = inst.config.version
    edition = EDITIONS[inst.faults.edition]
    props: dict[str, Any] = {
        "nessus_type": edition.nessus_type, "server_version": version, "nessus_ui_version": version,
        "nessus_ui_build": "20013", "server_build": "20013", "server_uuid": inst.server_uuid,
        "scanner_boottime": inst.boot_time, "idle_timeout": 30, "restricted_features": False,
        "show_npv": False, "analytics": {"enabled": False},
    }
    if authenticated:
        scan_api = inst.faults.scan_api
        name = edition.name if scan_api == edition.scan_api else "Nessus Essentials"
        props.update({
            "loaded_plugin_set": plugin_feed_version(), "plugin_set": plugin_feed_version(),
            "feed": "ProFeed", "enterprise": False, "evaluation": False,
            "expiration": 1893456000, "expiration_time": 1893456000,
            "capabilities": {"multi_scanner": False, "multi_user": "full", "report_email_config": False,
                             "two_factor": {"smtp": False, "sms": False}, "scan_vuln_groups": True},
            "license": {
                # the unlicensed fault on Manager reads as an Essentials licence (the old behaviour)
                "type": edition.license_type if name == edition.name else "home", "name": name,
                "restricted": not scan_api, "ips": edition.ips if name == edition.name else 16,
                "expiration_date": 1893456000,
                "features": {"api": True, "scan_api": scan_api, "logs": True, "policies": True, "report": True,
                             "users": False, "smtp": True, "plugin_rules": True},
            },
        })
    return json_response(200, props)


def templates(inst: Instance, req: Request) -> Response:
    return json_response(200, {"templates": [
        {"unsupported": False, "cloud_only": False, "desc": t["desc"], "order": t["order"],
         "subscription_only": False, "is_was": None, "title": t["title"], "is_agent": None,
         "uuid": t["uuid"], "manager_only": False, "name": t["name"]}
        for t in TEMPLATES
    ]})


def file_upload(inst: Instance, req: Request) -> Response:
    files = req.form_files()
    if "Filedata" not in files:
        raise HttpError(400, "Missing 'Filedata' file field")
    original, content = files["Filedata"]
    name = f"{secrets.token_hex(4)}-{original or 'upload'}"
    with inst.lock:
        inst.uploads[name] = content
    return json_response(200, {"fileuploaded": name})


# ---------------------------------------------------------------------------------------------- scans


def scan_or_404(inst: Instance, req: Request) -> Scan:
    """The scan named by the path's ``scan_id``, else 404 like Nessus."""
    try:
        scan = inst.scans.get(int(req.params["scan_id"]))
    except ValueError:
        scan = None
    if scan is None:
        raise HttpError(404, "The requested file was not found.")
    return scan


def run_or_404(scan: Scan, req: Request) -> Run | None:
    """The run named by the ``history_id`` query parameter (404 if the scan has none such), else the current one."""
    if not req.query.get("history_id"):
        return scan.current
    run = next((r for r in scan.runs if str(r.history_id) == req.query["history_id"]), None)
    if run is None:
        raise HttpError(404, "The requested file was not found.")
    return run


def _scan_row(scan: Scan, now: float) -> dict[str, Any]:
    status, _ = scan.state(now)
    run = scan.current
    return {"folder_id": 3, "type": "local", "read": False, "last_modification_date": int(scan.modified_at),
            "creation_date": int(scan.created_at), "status": status, "uuid": run.uuid if run else None,
            "shared": False, "user_permissions": 128, "owner": "admin", "timezone": None, "rrules": None,
            "starttime": None, "enabled": False, "control": True, "name": scan.name, "id": scan.id,
            "live_results": 0}


def _folders(scan_count: int) -> list[dict[str, Any]]:
    return [{"unread_count": 0, "custom": 0, "default_tag": 0, "type": "trash", "name": "Trash", "id": 2},
            {"unread_count": scan_count, "custom": 0, "default_tag": 1, "type": "main", "name": "My Scans", "id": 3}]


def list_scans(inst: Instance, req: Request) -> Response:
    now = time.monotonic()
    with inst.lock:
        rows = [_scan_row(s, now) for s in inst.scans.values()]
    if req.query.get("folder_id") not in (None, "", "3"):  # every scan lives in "My Scans"
        rows = []
    since = req.query.get("last_modification_date", "")
    if since.isdigit():  # only scans modified after this time
        rows = [r for r in rows if r["last_modification_date"] > int(since)]
    return json_response(200, {"folders": _folders(len(rows)), "scans": rows or None, "timestamp": int(time.time())})


def list_policies(inst: Instance, req: Request) -> Response:
    """``GET /policies``: user-defined policies only (a scan created from a template keeps its policy hidden).
    There are none, and like ``GET /scans`` Nessus answers an empty list as ``null``."""
    return json_response(200, {"policies": None})


def list_folders(inst: Instance, req: Request) -> Response:
    with inst.lock:
        count = len(inst.scans)
    return json_response(200, {"folders": _folders(count)})


def list_scanners(inst: Instance, req: Request) -> Response:
    """``GET /scanners``: the one local scanner (``scanner_id`` 1 in created scans)."""
    with inst.lock:
        running = inst.running_now()
    return json_response(200, {"scanners": [{
        "id": 1, "uuid": inst.server_uuid, "name": "Local Scanner", "type": "local", "status": "on",
        "engine_version": inst.config.version, "platform": "LINUX", "loaded_plugin_set": plugin_feed_version(),
        "linked": 1, "scan_count": running, "owner": "system", "shared": 1, "user_permissions": 128,
    }]})


def create_scan(inst: Instance, req: Request) -> Response:
    data = req.json()
    template = next((t for t in TEMPLATES if t["uuid"] == data.get("uuid")), None)
    if template is None:
        raise HttpError(400, "Invalid 'uuid' field: unknown template")
    settings = data.get("settings")
    if not isinstance(settings, dict) or not str(settings.get("name") or "").strip():
        raise HttpError(400, "Invalid 'settings.name' field: a scan name is required")
    text_targets = str(settings.get("text_targets") or "")
    targets = expand_targets(text_targets)
    if not targets:
        raise HttpError(400, "Invalid 'settings.text_targets' field: no targets were specified")
    with inst.lock:
        try:
            scenario, user, method, elevate = scenario_for(template["name"], data.get("credentials"), inst.uploads)
        except CredentialError as exc:
            raise HttpError(400, str(exc)) from None
        scan = Scan(
            id=inst.new_scan_id(), uuid=f"template-{uuid.uuid4()}", name=str(settings["name"]),
            description=str(settings.get("description") or ""), targets=targets, text_targets=text_targets,
            template_name=template["name"], template_uuid=template["uuid"], scenario=scenario, ssh_user=user,
            ssh_method=method, elevate_with=elevate,
            display_unreachable=str(settings.get("display_unreachable_hosts", "no")).lower() == "yes",
        )
        inst.scans[scan.id] = scan
        if _truthy(settings.get("launch_now")):  # Nessus starts the scan right away
            _start_run(inst, scan)
    body = {"scan": {
        "creation_date": int(scan.created_at), "custom_targets": text_targets, "default_permisssions": 0,
        "description": scan.description, "emails": None, "enabled": bool(settings.get("enabled", False)),
        "id": scan.id, "last_modification_date": int(scan.modified_at), "name": scan.name,
        "notification_filter_type": "and", "notification_filters": None, "owner": inst.config.username,
        "owner_id": 1, "policy_id": scan.id + 1000, "rrules": None, "scanner_id": 1, "shared": 0,
        "starttime": None, "tag_id": 3, "timezone": None, "type": "public", "user_permissions": 128,
        "uuid": scan.uuid,
    }}
    return json_response(200, body)


def scan_details(inst: Instance, req: Request) -> Response:
    now = time.monotonic()
    with inst.lock:
        scan = scan_or_404(inst, req)
        run = run_or_404(scan, req)  # ``history_id``: an earlier run, its hosts and findings
        status, progress = run.state(now) if run is not None else ("empty", 0)
        alive = scan.alive_targets(run)
        hosts = []
        if run is not None:
            for i, host in enumerate(alive):
                counts = report.severity_counts(scan, host)
                share = progress / 100
                counts = [int(c * share) for c in counts] if status != "completed" else counts
                hosts.append({
                    "asset_id": i + 2, "host_id": i + 2, "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, host)),
                    "hostname": host, "progress": f"{progress * 10}-1000/{progress * 20}-2000",
                    "scanprogresscurrent": progress, "scanprogresstotal": 100,
                    "numchecksconsidered": progress * 20, "totalchecksconsidered": 2000,
                    "severitycount": {"item": [{"count": c, "severitylevel": lvl} for lvl, c in enumerate(counts)]},
                    "severity": sum(counts), "score": counts[1] + counts[2] * 10 + counts[3] * 100 + counts[4] * 1000,
                    "info": counts[0], "low": counts[1], "medium": counts[2], "high": counts[3],
                    "critical": counts[4], "host_index": i,
                })
        history = [{"history_id": r.history_id, "uuid": r.uuid, "owner_id": 1, "status": r.state(now)[0],
                    "creation_date": int(r.launched_at), "last_modification_date": int(r.ended_at or time.time()),
                    "type": "local", "scheduler": 0, "alt_targets_used": bool(r.alt_targets), "is_archived": False}
                   for r in scan.runs]
        info = {
            "acls": None, "edit_allowed": True, "status": status, "policy": report.POLICY_TITLES[scan.template_name],
            "pci-can-upload": False, "hasaudittrail": True, "scan_start": int(run.launched_at) if run else None,
            "folder_id": 3, "targets": scan.text_targets, "timestamp": int(time.time()),
            "object_id": scan.id, "scanner_name": "Local Scanner", "haskb": True, "uuid": run.uuid if run else None,
            "hostcount": len(hosts), "scan_end": int(run.ended_at) if run and run.ended_at else None,
            "name": scan.name, "user_permissions": 128, "control": True, "scan_type": "remote",
            "alt_targets_used": bool(run and run.alt_targets), "no_target": False, "progress": progress,
        }
        vulnerabilities = _vulnerabilities(scan, alive) if status == "completed" else []
    return json_response(200, {"info": info, "hosts": hosts, "comphosts": [], "notes": None, "remediations": None,
                               "vulnerabilities": vulnerabilities, "compliance": [], "history": history or None,
                               "filters": []})


_SCAN_INFO = (19506, "Nessus Scan Information", "Settings", 0)


def _host_plugins(scan: Scan, host: str) -> list[tuple[int, str, str, int]]:
    """(plugin id, name, family, severity) of every finding on ``host``, 19506 included (see report.render)."""
    return [(p.id, p.name, p.family, p.severity) for p in report.host_findings(scan, host)] + [_SCAN_INFO]


def _vuln_rows(plugins: list[tuple[int, str, str, int]], extra: dict[str, Any]) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for plugin_id, name, family, severity in plugins:
        row = rows.setdefault(plugin_id, {**extra, "plugin_id": plugin_id, "plugin_name": name,
                                          "plugin_family": family, "count": 0, "vuln_index": len(rows),
                                          "severity_index": len(rows), "severity": severity})
        row["count"] += 1
    return sorted(rows.values(), key=lambda r: (-r["severity"], r["plugin_id"]))


def _vulnerabilities(scan: Scan, alive: list[str]) -> list[dict[str, Any]]:
    """``vulnerabilities`` of ``GET /scans/{id}``: one row per plugin, ``count`` = its instances on all hosts."""
    return _vuln_rows([p for host in alive for p in _host_plugins(scan, host)], {})


def host_details(inst: Instance, req: Request) -> Response:
    """``GET /scans/{id}/hosts/{host_id}[?history_id=h]``: the host's ``info`` and its ``vulnerabilities``
    (finished runs)."""
    now = time.monotonic()
    with inst.lock:
        scan = scan_or_404(inst, req)
        run = run_or_404(scan, req)
        alive = scan.alive_targets(run)
        index = int(req.params["host_id"]) - 2  # host_id = position among answering hosts + 2, as in the list
        if run is None or not 0 <= index < len(alive):
            raise HttpError(404, "The requested file was not found.")
        host, status = alive[index], run.state(now)[0]
        info = {"host_start": time.ctime(run.launched_at), "host_end": time.ctime(run.ended_at) if run.ended_at
                else None, "host-ip": report.host_ip(host), "host-fqdn": host if report.host_ip(host) != host
                else None, "operating-system": "Linux Kernel 4.15.0-213-generic on Ubuntu 18.04",
                "mac-address": None, "netbios-name": None}
        rows = _vuln_rows(_host_plugins(scan, host), {"host_id": index + 2, "hostname": host}) \
            if status == "completed" else []
    return json_response(200, {"info": info, "vulnerabilities": rows, "compliance": []})


def delete_scan(inst: Instance, req: Request) -> Response:
    with inst.lock:
        scan = scan_or_404(inst, req)
        if scan.state(time.monotonic())[0] in ACTIVE:
            raise HttpError(409, "Scan is currently running and cannot be deleted; stop it first")
        del inst.scans[scan.id]
    return Response(200)


def launch_scan(inst: Instance, req: Request) -> Response:
    alt = req.json().get("alt_targets")
    alt_targets = None
    if alt is not None:
        if not isinstance(alt, list) or not all(isinstance(t, str) for t in alt):
            raise HttpError(400, "Invalid 'alt_targets' field: give a list of targets")
        alt_targets = expand_targets(",".join(alt))
        if not alt_targets:
            raise HttpError(400, "Invalid 'alt_targets' field: no targets were specified")
    with inst.lock:
        inst.stats.launch_requests += 1
        scan = scan_or_404(inst, req)
        status, _ = scan.state(time.monotonic())
        if status in ACTIVE:
            scan.launch_refusals += 1
            raise HttpError(409, f"Scan cannot be launched: it is already {status}")
        run = _start_run(inst, scan)
        run.alt_targets = alt_targets
    return json_response(200, {"scan_uuid": run.uuid})


def _start_run(inst: Instance, scan: Scan) -> Run:
    """A new run of ``scan`` (caller holds the lock): launch, or create with ``launch_now``."""
    faults = inst.faults
    run = new_run(inst.new_history_id(), inst.timing, faults.pending_stall, faults.hang_at_99)
    run.pausing_for, run.stop_status, run.end_status = faults.pausing_seconds, faults.stop_status, faults.end_status
    scan.runs.append(run)
    scan.launches += 1
    scan.modified_at = time.time()
    inst.record_launch()
    return run


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"true", "yes", "1", "on"}) or value == 1


_PAST = {"stop": "stopped", "pause": "paused", "resume": "resumed"}


def scan_action(action: str) -> Handler:
    """``POST /scans/{id}/stop|pause|resume``."""

    def handler(inst: Instance, req: Request) -> Response:
        now = time.monotonic()
        with inst.lock:
            scan = scan_or_404(inst, req)
            run = scan.current
            status = scan.state(now)[0]
            if run is None or status in FINAL:
                raise HttpError(409, f"Scan cannot be {_PAST[action]}: its status is {status}")
            if action == "stop":
                if inst.faults.stop_ignored:
                    return Response(200)
                run.stop_requested = now if run.stop_requested is None else run.stop_requested
            elif action == "pause":
                if status in ("paused", "pausing"):
                    raise HttpError(409, f"Scan is already {status}")
                run.paused_at = now
            elif action == "resume":
                if run.paused_at is None:
                    raise HttpError(409, f"Scan cannot be resumed: its status is {status}")
                run.paused_total += now - run.paused_at
                run.paused_at = None
                run.resumed_at = now
            scan.modified_at = time.time()
        return Response(200)

    return handler
