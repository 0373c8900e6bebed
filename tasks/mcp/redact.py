"""Credentials given to a tool never leave the MCP server: not in an answer, not in a log line.

Two guards share one registry of the secrets of the tool calls in flight:

* :class:`RedactSecrets`, an SDK server middleware around every ``tools/call``: it registers the call's
  credential arguments (``ssh_password``, ``ssh_private_key``, ``escalation_password``) before the call and
  replaces them in the answer afterwards, whatever produced it (our tools, an error, or the SDK's argument
  validation, whose messages quote the input, truncated: that quote is dropped whole). Only what carries data
  is scrubbed: the text of content blocks and the *values* inside the structured content; never a key or a
  protocol field (``type``, ``isError``, ``structuredContent``…), so a password such as ``Error`` or ``x``
  cannot break the JSON-RPC answer. A text that is the rendering of the structured content (JSON) is rebuilt
  from the scrubbed structured content, so its JSON keys stay whole too;
* :class:`RedactingFilter`, on the log handlers: a record formatted while such a call runs has them
  replaced too (the SDK logs a tool's failure message, which can quote the input).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, EmbeddedResource, ResourceLink, TextContent, TextResourceContents
from pydantic import ValidationError

from tasks.mcp.errors import render_text

SECRET_ARGUMENTS = ("ssh_password", "ssh_private_key", "escalation_password")
REDACTED = "[redacted]"
# pydantic's validation messages quote the rejected input, truncated in the middle ("{'ssh_pa...cret'}"): a
# fragment of a secret would survive a whole-string replacement, so the quote itself goes.
_INPUT_VALUE = re.compile(r"input_value=.*$", re.MULTILINE)


class SecretRegistry:
    """The secret strings of the calls in flight (counted, so two calls with one password both stay covered)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, values: list[str]) -> None:
        with self._lock:
            self._counts.update(values)

    def remove(self, values: list[str]) -> None:
        with self._lock:
            self._counts.subtract(values)
            self._counts += Counter()  # drop zero counts

    def current(self) -> list[str]:
        with self._lock:
            return sorted(self._counts, key=len, reverse=True)  # longest first: a secret inside another


REGISTRY = SecretRegistry()


def secrets_of(arguments: Any) -> list[str]:
    """The credential arguments of a tool call, each also as JSON and ``repr`` would quote it (an answer's text
    is JSON: a password holding ``"``, ``\\`` or non-ASCII letters appears there escaped)."""
    if not isinstance(arguments, dict):
        return []
    values: list[str] = []
    for name in SECRET_ARGUMENTS:
        value = arguments.get(name)
        if value is None or value == "":
            continue
        texts = [value] if isinstance(value, str) else [repr(value), str(value)]
        for text in texts:
            values += [text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]]
    return list(dict.fromkeys(v for v in values if v))


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of a secret replaced, in every string it holds (keys included).

    Except a piece of an identifier scanpool generated: an occurrence strictly inside a UUID (a task or trace
    id, also inside a link) is left alone, so a short password such as ``bad`` cannot turn the task id
    ``…-bad7-…`` an agent must quote back into ``…-[redacted]7-…``. A UUID equal to a secret is replaced."""
    if not secrets:
        return value
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def scrub_values(value: Any, secrets: list[str]) -> Any:
    """Like :func:`scrub`, but keys stay as they are (a key is structure, not data)."""
    if not secrets:
        return value
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, dict):
        return {k: scrub_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_values(v, secrets) for v in value]
    return value


_UUID = re.compile(r"(?<![0-9a-f])[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}(?![0-9a-f])", re.IGNORECASE)


def _scrub_text(text: str, secrets: list[str]) -> str:
    present = [s for s in secrets if s in text]
    if not present:
        return text
    pattern = re.compile("|".join(re.escape(s) for s in sorted(present, key=len, reverse=True)))
    ids = [m.span() for m in _UUID.finditer(text)]
    out: list[str] = []
    done = pos = 0
    while (match := pattern.search(text, pos)) is not None:
        start, end = match.span()
        if any(a <= start and end <= b and (a, b) != (start, end) for a, b in ids):
            pos = start + 1  # inside an identifier: look on from the next character
            continue
        out += [text[done:start], REDACTED]
        done = pos = end
    out.append(text[done:])
    return "".join(out)


class RedactSecrets:
    """SDK server middleware (``MCPServer(middleware=[…])``) for ``tools/call``."""

    def __init__(self, registry: SecretRegistry = REGISTRY) -> None:
        self.registry = registry

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params or {}
        secrets = secrets_of(params.get("arguments"))
        if not secrets:
            return await call_next(ctx)
        secrets = sorted(set(secrets), key=len, reverse=True)
        self.registry.add(secrets)
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            raise MCPError(code=exc.error.code, message=scrub(exc.error.message, secrets),
                           data=scrub(exc.error.data, secrets)) from None
        except Exception as exc:
            if any(s in str(exc) for s in secrets):
                raise MCPError(code=-32602, message="invalid tool call (details withheld: they quoted a "
                               "credential)") from None
            raise
        finally:
            self.registry.remove(secrets)
        return redact_result(result, secrets)


_INPUT_WITHHELD = "input withheld: the call carries credentials]"
_ERROR_NAMES = ("code", "field")


def redact_result(result: Any, secrets: list[str]) -> Any:
    """A ``tools/call`` answer with the secrets replaced in its data, its structure untouched."""
    if isinstance(result, dict):
        try:
            result = CallToolResult.model_validate(result)
        except ValidationError:
            return scrub_values(result, secrets)
    if not isinstance(result, CallToolResult):
        if hasattr(result, "model_dump"):
            result = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return scrub_values(result, secrets)
    structured = result.structured_content
    clean = scrub_values(structured, secrets) if structured is not None else None
    error = structured.get("error") if isinstance(structured, dict) and result.is_error else None
    if isinstance(error, dict):  # an error's code and field are names scanpool gives, not data: kept whole
        clean["error"].update({k: error[k] for k in _ERROR_NAMES if k in error})
    content = [_redact_block(block, structured, clean, bool(result.is_error), secrets) for block in result.content]
    return result.model_copy(update={"content": content, "structured_content": clean})


def _redact_block(block: Any, structured: Any, clean: Any, is_error: bool, secrets: list[str]) -> Any:
    if isinstance(block, TextContent):
        text = block.text
        if structured is not None and text == render_text(structured, is_error):
            text = render_text(clean, is_error)
        else:
            if is_error:
                text = _INPUT_VALUE.sub(_INPUT_WITHHELD, text)
            text = _scrub_text(text, secrets)
        return block.model_copy(update={"text": text})
    if isinstance(block, EmbeddedResource) and isinstance(block.resource, TextResourceContents):
        resource = block.resource.model_copy(update={"text": _scrub_text(block.resource.text, secrets)})
        return block.model_copy(update={"resource": resource})
    if isinstance(block, ResourceLink):
        return block.model_copy(update={k: scrub_values(getattr(block, k), secrets) for k in ("title", "description")})
    return block  # images, audio: binary data


class RedactingFilter(logging.Filter):
    """Replaces the secrets of the calls in flight in a record's message and traceback."""

    def __init__(self, registry: SecretRegistry = REGISTRY) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.registry.current()
        if not secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = scrub(message, secrets)
        record.args = None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, secrets)
            record.exc_info = None
        return True
