"""The export endpoints of the emulator: ``POST /scans/{id}/export``, the token flow
(``/tokens/{token}/status|download``) and the older file flow (``/scans/{id}/export/{file}/status|download``)."""

from __future__ import annotations

import re
from typing import Any

from scanners.emulator import report
from scanners.emulator.api import run_or_404, scan_or_404
from scanners.emulator.http import HttpError, Request, Response, json_response
from scanners.emulator.instance import Export, Instance


def export_request(inst: Instance, req: Request) -> Response:
    data = req.json()
    fmt = data.get("format", "nessus")
    if fmt != "nessus":
        raise HttpError(400, f"Invalid 'format' field: the emulator exports 'nessus' only, not {fmt!r}")
    with inst.lock:
        scan = scan_or_404(inst, req)
        if scan.current is None:
            raise HttpError(409, "Scan has never been launched: there is nothing to export")
        run = run_or_404(scan, req)  # ``history_id``: export an earlier run
        export = inst.add_export(scan.id)
        if not export.error:
            export.scan, export.run = scan, run
            export.filename = download_name(scan.name, export.file_id)
    body: dict[str, Any] = {"file": export.file_id}
    if inst.faults.token_flow:
        body["token"] = export.token
    return json_response(200, body)


def download_name(scan_name: str, file_id: int) -> str:
    """``<name>_<file id>.nessus`` for Content-Disposition, like Nessus: only ASCII letters, digits, ``_.-``
    (a header is Latin-1 and one line: any other character, quote or line break would break the download)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", scan_name.split(" [")[0])[:40].strip("_.")
    return f"{stem or 'scan'}_{file_id}.nessus"


def _export_for(inst: Instance, req: Request) -> Export:
    with inst.lock:
        if "token" in req.params:
            if not inst.faults.token_flow:
                raise HttpError(404, "The requested file was not found.")
            file_id = inst.tokens.get(req.params["token"])
        else:
            scan_or_404(inst, req)
            try:
                file_id = int(req.params["file_id"])
            except ValueError:
                file_id = None
        export = inst.exports.get(file_id) if file_id is not None else None
        if export is None or ("scan_id" in req.params and str(export.scan_id) != req.params["scan_id"]):
            raise HttpError(404, "The requested file was not found.")
        return export


def export_status(inst: Instance, req: Request) -> Response:
    export = _export_for(inst, req)
    status = inst.export_status(export)
    body: dict[str, Any] = {"status": status}
    if "token" in req.params:
        body["message"] = {"ready": "The download is ready.", "loading": "The download is being prepared.",
                           "error": "The export failed."}[status]
    return json_response(200, body)


def export_download(inst: Instance, req: Request) -> Response:
    export = _export_for(inst, req)
    status = inst.export_status(export)
    if status == "loading":
        raise HttpError(409, "The export is not ready yet")
    if status == "error":
        raise HttpError(500, "The export failed")
    data = report.render(export.scan, export.run) if export.scan is not None else b""
    return Response(200, data, "application/octet-stream",
                    {"Content-Disposition": f'attachment; filename="{export.filename}"'})
