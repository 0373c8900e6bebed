"""How the tools take their arguments and give their answers, on top of the SDK's ``Tool``.

* Arguments are strict: an unknown argument is refused, naming it and the argument it probably meant
  (``list_tasks {"status": …}`` → ``status_filter``), before the SDK's own validation; the argument model
  forbids extra fields (``additionalProperties: false`` in ``tools/list``) and coerces nothing (``"3600"`` is not
  an integer, ``"true"`` not a boolean). The SDK still parses JSON-encoded lists and objects first
  (``pre_parse_json``: Claude Desktop sends ``"[\\"a\\"]"``).
* The text content of an answer is compact JSON (the SDK's default is indented), the same as the structured
  content, which is still validated against the output schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import ConfigDict

from tasks.mcp.client import ApiError
from tasks.mcp.errors import close_names, error_result, render_text

CREDENTIAL_ARGUMENTS = ("ssh_username", "ssh_password", "ssh_private_key", "escalation_password",
                        "escalation_account", "elevate_privileges_with")
# Names agents use for scanpool's arguments (other Nessus servers, the REST API).
SYNONYMS = {
    "status": "status_filter", "statuses": "status_filter", "target": "target_filter", "pool": "scanner_pool",
    "scanner": "scanner_instance", "instance": "scanner_instance", "id": "task_id", "task": "task_id",
    "scan_id": "task_id", "username": "ssh_username", "user": "ssh_username", "password": "ssh_password",
    "private_key": "ssh_private_key", "key": "ssh_private_key", "timeout": "timeout_seconds",
    "page_number": "page", "per_page": "page_size", "size": "page_size", "severity": "filters",
    "cve": "filters", "host": "filters", "order": "ordering", "sort": "ordering", "file": "path",
    "credentials": "ssh_username", "elevate": "elevate_privileges_with", "group": "view",
}


class CompactResults(FuncMetadata):
    """The SDK's conversion of a tool's return value, with the text content as compact JSON."""

    def convert_result(self, result: Any) -> CallToolResult | InputRequiredResult:
        converted = super().convert_result(result)
        if isinstance(converted, CallToolResult) and converted.structured_content is not None \
                and not converted.is_error:
            text = render_text(converted.structured_content)
            converted = converted.model_copy(update={"content": [TextContent(type="text", text=text)]})
        return converted


class ScanpoolTool(Tool):
    """A tool whose unknown arguments are refused by name, with a hint of the right one."""

    @property
    def argument_names(self) -> list[str]:
        return [field.alias or name for name, field in self.fn_metadata.arg_model.model_fields.items()]

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        unknown = [name for name in arguments if name not in self.argument_names]
        if unknown:
            return error_result(unknown_argument(self.name, unknown[0], self.argument_names))
        return await super().run(arguments, context, convert_result=convert_result)


def unknown_argument(tool: str, name: str, known: list[str]) -> ApiError:
    """The refusal of an unknown argument (its value is never quoted: it may be a credential)."""
    if name in CREDENTIAL_ARGUMENTS and "ssh_username" not in known:
        hint = f"{tool} takes no credentials: use run_authenticated_scan to log in to the targets"
    else:
        guess = SYNONYMS.get(name.lower())
        guesses = [guess] if guess in known else close_names(name, known)
        hint = f"did you mean {' or '.join(guesses)}?" if guesses else "leave it out"
    shown = name if len(name) <= 64 else name[:61] + "..."
    takes = f"{tool} takes: {', '.join(known)}" if known else f"{tool} takes no arguments"
    return ApiError(None, "invalid", f"unknown argument {shown!r}: {hint} ({takes})", shown)


def strict_arguments(model: type[ArgModelBase]) -> type[ArgModelBase]:
    """``model`` refusing extra fields and coercing nothing (pydantic strict mode)."""
    return type(model.__name__, (model,), {"model_config": ConfigDict(extra="forbid", strict=True),
                                           "__module__": __name__, "__doc__": model.__doc__})


def make_tool(fn: Callable[..., Any], *, name: str, title: str, annotations: ToolAnnotations) -> ScanpoolTool:
    tool = ScanpoolTool.from_function(fn, name=name, title=title, annotations=annotations, structured_output=True)
    meta = tool.fn_metadata
    arg_model = strict_arguments(meta.arg_model)
    tool.fn_metadata = CompactResults(arg_model=arg_model, output_schema=meta.output_schema,
                                      output_model=meta.output_model, wrap_output=meta.wrap_output)
    tool.parameters = arg_model.model_json_schema(by_alias=True)
    return tool
