"""Pieces of the tools' answers: a scan as the agent gets it (with a hint of the next call), and the check of a
credential argument (typed ``Any`` in the schema: see :func:`tasks.mcp.schemas._secret`)."""

from __future__ import annotations

from typing import Any

from tasks.mcp import untrusted
from tasks.mcp.errors import ToolFailure


def string_argument(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ToolFailure(field, "must be a string")
    return value


def scan_answer(scan: dict[str, Any], *, replayed: bool | None = None) -> dict[str, Any]:
    answer = untrusted.split(scan, untrusted.STATUS_UNTRUSTED_FIELDS)
    answer.pop("description", None)
    if replayed is not None:
        answer["idempotent_replay"] = replayed
    status = scan.get("status")
    if status == "pending_approval":
        approval = scan.get("approval") or {}
        answer["next_step"] = (f"the scan waits for a person to approve it ({approval.get('reason', 'policy')}); "
                               f"approvers: {approval.get('approvers', 'see approval')}; it is cancelled if not "
                               f"approved by {approval.get('expires_at')}. Do not submit it again: tell the user, "
                               f"and call get_scan_status(task_id=\"{scan['task_id']}\") every few minutes")
    elif status in ("queued", "running"):
        answer["next_step"] = (f"call get_scan_status(task_id=\"{scan['task_id']}\") every 30-60 s until status is "
                               "one of completed, failed, timeout, cancelled")
    elif scan.get("results_file"):
        answer["next_step"] = (f"call get_scan_results(task_id=\"{scan['task_id']}\") for findings; "
                               "view=\"hosts\" for the authentication verdict of each host")
    return answer
