"""Tool errors and the text of answers.

Every API refusal becomes a tool error (``isError``) whose structured content is
``{"error": {"code", "message", "field"?, "http_status", "details"?}}``. The API names its own fields
(``credentials.password``, ``pool``, ``status``…); an agent can only change the tool's arguments, so the field
and the message are rewritten with the argument names of the tool that was called (:data:`FIELD_NAMES`).

The text content of an answer is :func:`render_text` of its structured content: compact JSON (an error adds
one readable line first). The redaction middleware relies on that to rebuild the text from the scrubbed
structured content instead of editing the JSON text itself.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from mcp.types import CallToolResult, TextContent

from tasks.mcp.client import ApiError


class ToolFailure(Exception):
    """A refusal found by the tool itself (before or after an API call), reported like an API error."""

    def __init__(self, field: str | None, message: str, code: str = "invalid", details: Any = None) -> None:
        super().__init__(message)
        self.error = ApiError(None, code, f"{field}: {message}" if field else message, field, details)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error_text(body: dict[str, Any]) -> str:
    error = body["error"]
    text = f"scanpool refused: {error.get('code')}"
    if error.get("http_status"):
        text += f" (HTTP {error['http_status']})"
    return f"{text}: {error.get('message')}\n{compact_json(body)}"


def render_text(structured: Any, is_error: bool = False) -> str:
    """The text content that goes with ``structured``."""
    if is_error and isinstance(structured, dict) and isinstance(structured.get("error"), dict):
        return error_text(structured)
    return compact_json(structured)


def error_result(error: ApiError) -> CallToolResult:
    body = {"error": error.as_dict()}
    return CallToolResult(content=[TextContent(type="text", text=render_text(body, True))],
                          structured_content=body, is_error=True)


# ------------------------------------------------------------------------------------------ API field names

_CREDENTIALS = {
    "credentials": "ssh_username",
    "credentials.username": "ssh_username",
    "credentials.password": "ssh_password",
    "credentials.private_key": "ssh_private_key",
    "credentials.elevate_privileges_with": "elevate_privileges_with",
    "credentials.escalation_account": "escalation_account",
    "credentials.escalation_password": "escalation_password",
}
_RESULT_FILTERS = ("severity", "host", "port", "plugin_id", "plugin_family", "cve", "cvss", "q", "exploit_available",
                   "verdict")

# tool -> {field the API names: argument of the tool}
FIELD_NAMES: dict[str, dict[str, str]] = {
    "run_untrusted_scan": {"pool": "scanner_pool"},
    "run_authenticated_scan": {"pool": "scanner_pool", **_CREDENTIALS},
    "list_tasks": {"status": "status_filter", "target": "target_filter", "pool": "scanner_pool",
                   "page_size": "limit"},
    "get_scan_results": {name: f"filters.{name}" for name in _RESULT_FILTERS},
    "get_pool_status": {"pool": "scanner_pool", "name": "scanner_pool"},
    "get_queue_status": {"pool": "scanner_pool", "name": "scanner_pool"},
    "validate_scan_results": {"file": "path"},
}
# In a message about credentials, the API's bare key names (``give exactly one of password or private_key``).
_CREDENTIAL_WORDS = re.compile(r"(?<![\w.])(username|password|private_key)(?!\w)")


def for_tool(error: ApiError, tool: str) -> ApiError:
    """``error`` with the API's field names replaced by ``tool``'s argument names (field and message)."""
    names = FIELD_NAMES.get(tool)
    if not names or not error.field:
        return error
    field = names.get(error.field, error.field)
    message = error.message
    if message.startswith(f"{error.field}:"):
        message = f"{field}:{message[len(error.field) + 1:]}"
    for api_name, argument in sorted(names.items(), key=lambda item: -len(item[0])):
        if "." in api_name:  # qualified names are unambiguous anywhere in the text
            message = message.replace(api_name, argument)
    if error.field.startswith("credentials"):
        head, sep, rest = message.partition(": ")
        message = head + sep + _CREDENTIAL_WORDS.sub(lambda m: f"ssh_{m.group(1)}", rest) if sep else message
    return ApiError(error.status, error.code, message, field, error.details)


def api_tool(fn: Callable[..., Any]) -> Callable[..., Any]:
    """API and tool refusals become tool errors, named with the tool's own arguments."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            return error_result(for_tool(exc, fn.__name__))
        except ToolFailure as exc:
            return error_result(exc.error)

    return wrapper


def close_names(name: str, known: Mapping[str, str] | list[str]) -> list[str]:
    """Arguments ``name`` may have meant: containing it or contained in it, then by spelling."""
    low = name.lower()
    near = [k for k in known if len(low) >= 3 and (low in k or k in low)]
    return near or difflib.get_close_matches(low, list(known), n=2, cutoff=0.6)
