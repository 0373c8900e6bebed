"""Credentials given to a tool never leave the MCP server: not in an answer, not in a log line.

Two guards share one registry of the secrets of the tool calls in flight:

* :class:`RedactSecrets`, an SDK server middleware around every ``tools/call``: it registers the call's
  credential arguments (``ssh_password``, ``ssh_private_key``, ``escalation_password``) before the call and
  replaces them in the answer afterwards, whatever produced it (our tools, an error, or the SDK's argument
  validation, whose messages quote the input, truncated: that quote is dropped whole);
* :class:`RedactingFilter`, on the log handlers: a record formatted while such a call runs has them
  replaced too (the SDK logs a tool's failure message, which can quote the input).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from typing import Any

from mcp.shared.exceptions import MCPError

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
    if not isinstance(arguments, dict):
        return []
    values = []
    for name in SECRET_ARGUMENTS:
        value = arguments.get(name)
        if value is None or value == "":
            continue
        text = value if isinstance(value, str) else repr(value)
        values.append(text)
        if not isinstance(value, str):
            values.append(str(value))
    return values


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of a secret replaced, in every string it holds (keys included)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


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
        if hasattr(result, "model_dump"):
            result = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if isinstance(result, dict) and result.get("isError"):
            for item in result.get("content") or []:
                if isinstance(item, dict) and isinstance(item.get("text"), str):
                    item["text"] = _INPUT_VALUE.sub("input withheld: the call carries credentials]", item["text"])
        return scrub(result, secrets)


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
