"""Credentials given to a tool never appear in the MCP server's answers or logs — on success, on API refusals,
on the SDK's own argument-validation errors (which quote the whole input) and with DEBUG logging."""

from __future__ import annotations

import json
import logging
import uuid

import anyio
import pytest

from tasks.mcp.client import ApiConfig, ScanpoolApi
from tasks.mcp.errors import compact_json, render_text
from tasks.mcp.redact import REDACTED, RedactingFilter, RedactSecrets, SecretRegistry, scrub, secrets_of
from tasks.mcp.server import build_server
from tasks.models import ScanTask
from tests.api_support import OPERATE, token_client, user_with
from tests.factories import PoolFactory, ScannerFactory
from tests.mcp_support import ok, server_env, stdio_session, tool_error

PASSWORD = "Zq9-UNIQUE-ssh-secret-4711"
ESCALATION = "Esc-UNIQUE-sudo-secret-0815"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nUNIQUEKEYMATERIAL0xDEADBEEF\n-----END OPENSSH PRIVATE KEY-----"
NUMBER = 98765432123
SECRETS = (PASSWORD, ESCALATION, "UNIQUEKEYMATERIAL0xDEADBEEF", str(NUMBER))


def text_of(result) -> str:
    return json.dumps([c.text for c in result.content]) + json.dumps(result.structured_content)


def assert_clean(result) -> None:
    text = text_of(result)
    for secret in SECRETS:
        assert secret not in text, (secret, text)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_credentials_never_in_answers_or_logs(live_server, fresh_throttle_counts, tmp_path):
    pool = PoolFactory(name="vault", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, name="vault-1", url="https://vault-1.example.net:8834")  # no worker: never contacted
    _, key = token_client(user_with(OPERATE, "mcp-secrets"))
    errlog_path = tmp_path / "stderr.log"
    base = {"name": "secret test", "ssh_username": "root", "scanner_pool": "vault"}

    async def scenario() -> None:
        with errlog_path.open("w") as errlog:
            async with stdio_session(server_env(live_server.url, key, SCANPOOL_LOG_LEVEL="DEBUG"), errlog) as s:
                # The SDK's validation error quotes the whole input (pydantic's input_value): redacted.
                missing = await s.call_tool("run_authenticated_scan", {
                    **base, "ssh_password": PASSWORD, "escalation_password": ESCALATION})
                assert missing.is_error and "targets" in missing.content[0].text
                assert "input withheld" in missing.content[0].text
                assert_clean(missing)
                for fragment in (PASSWORD[-8:], ESCALATION[-8:], PASSWORD[:8], ESCALATION[:8]):
                    assert fragment not in text_of(missing)
                wrong_type = await s.call_tool("run_authenticated_scan", {
                    **base, "targets": "192.0.2.10", "ssh_password": NUMBER})
                assert tool_error(wrong_type)["message"] == "ssh_password: must be a string"
                assert_clean(wrong_type)
                out_of_scope = await s.call_tool("run_authenticated_scan", {
                    **base, "targets": "10.9.9.9", "ssh_password": PASSWORD})
                assert tool_error(out_of_scope)["code"] == "out_of_scope"
                assert_clean(out_of_scope)
                no_method = await s.call_tool("run_authenticated_scan", {
                    **base, "targets": "192.0.2.10", "ssh_password": PASSWORD, "scan_type": "authenticated_privileged",
                    "escalation_password": ESCALATION})
                assert tool_error(no_method)["field"] == "elevate_privileges_with"  # the tool's argument, not the API's
                assert_clean(no_method)
                queued = await s.call_tool("run_authenticated_scan", {
                    **base, "targets": "192.0.2.10", "ssh_password": PASSWORD, "scan_type": "authenticated_privileged",
                    "elevate_privileges_with": "sudo", "escalation_password": ESCALATION})
                task_id = ok(queued)["task_id"]
                assert_clean(queued)
                with_key = await s.call_tool("run_authenticated_scan", {
                    **base, "targets": "192.0.2.11", "ssh_private_key": KEY})
                assert ok(with_key)["status"] == "queued"
                assert_clean(with_key)
                assert_clean(await s.call_tool("get_scan_status", {"task_id": task_id, "include_events": True}))
                assert_clean(await s.call_tool("list_tasks", {}))
        log = errlog_path.read_text()
        assert "run_authenticated_scan" in log  # the SDK logged the refused arguments (field names only)
        for secret in (*SECRETS, key):
            assert secret not in log

    anyio.run(scenario)


def test_in_process_validation_error_is_redacted(caplog):
    """The middleware alone (no API reachable): the SDK's validation message loses the secrets."""
    server = build_server(ScanpoolApi(ApiConfig(url="http://127.0.0.1:9", token="sp_unused")))

    async def call():
        from mcp import Client

        async with Client(server) as client:
            return await client.call_tool("run_authenticated_scan", {"name": "x", "ssh_username": "root",
                                                                      "ssh_password": PASSWORD})

    with caplog.at_level(logging.DEBUG):
        result = anyio.run(call)
    assert result.is_error and "input withheld" in result.content[0].text
    assert_clean(result)
    assert PASSWORD[-6:] not in text_of(result)
    assert PASSWORD not in caplog.text


def test_redacting_filter_replaces_the_secrets_of_calls_in_flight():
    registry = SecretRegistry()
    filt = RedactingFilter(registry)
    registry.add([PASSWORD])
    try:
        raise ValueError(f"boom {PASSWORD}")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "tool failed: %r", (f"pw={PASSWORD}",),
                                   sys.exc_info())
    assert filt.filter(record)
    formatted = logging.Formatter().format(record)
    assert PASSWORD not in formatted and formatted.count(REDACTED) == 2
    registry.remove([PASSWORD])
    assert registry.current() == []
    other = logging.LogRecord("x", logging.INFO, __file__, 1, "nothing %s", ("here",), None)
    assert filt.filter(other) and other.getMessage() == "nothing here"


def test_scrub_walks_nested_answers():
    answer = {"a": [f"x{PASSWORD}y", {PASSWORD: 1}], "b": 2}
    assert scrub(answer, [PASSWORD]) == {"a": [f"x{REDACTED}y", {REDACTED: 1}], "b": 2}


COLLIDING_ID = "73dfc0b1-df7d-4fc2-bad7-d9bda7fce99e"  # a real task id from a CI run whose password was "bad"


def test_scrub_leaves_identifiers_whole_but_not_secrets_next_to_them():
    answer = {"task_id": COLLIDING_ID, "links": {"status": f"http://h/api/v1/scans/{COLLIDING_ID}/"},
              "name": "bad login", "note": f"pw=bad;{COLLIDING_ID}", "whole": "bad7" + COLLIDING_ID[4:]}
    scrubbed = scrub(answer, ["bad"])
    assert scrubbed["task_id"] == COLLIDING_ID
    assert scrubbed["links"]["status"] == f"http://h/api/v1/scans/{COLLIDING_ID}/"
    assert scrubbed["name"] == f"{REDACTED} login" and scrubbed["note"] == f"pw={REDACTED};{COLLIDING_ID}"
    # a UUID that is the secret, and a secret running past the end of an id, are replaced
    assert scrub({"x": COLLIDING_ID}, [COLLIDING_ID]) == {"x": REDACTED}
    assert scrub(f"{COLLIDING_ID}/bad", ["e99e/bad"]) == f"{COLLIDING_ID[:-4]}{REDACTED}"
    # only a whole UUID is an identifier: not a UUID-shaped run inside a longer hex string
    assert scrub(f"f{COLLIDING_ID}", ["bad"]) == f"f{COLLIDING_ID}".replace("bad", REDACTED)


def test_secrets_are_also_replaced_as_json_and_repr_quote_them():
    password = 'pä"ss\\word'
    secrets = secrets_of({"ssh_password": password})
    text = json.dumps({"message": f"login as root with {password} failed"})
    assert "pä" in json.loads(text)["message"] and password not in text  # escaped: a plain replace misses it
    scrubbed = scrub(text, secrets)
    assert json.loads(scrubbed)["message"] == f"login as root with {REDACTED} failed"
    assert scrub(repr([password]), secrets) == f"['{REDACTED}']"


@pytest.mark.django_db(transaction=True)
def test_short_password_does_not_corrupt_the_task_id_it_answers(live_server, fresh_throttle_counts, monkeypatch):
    """End to end (API over HTTP, the SDK's in-process client): the task id holds the password ``bad``."""
    pool = PoolFactory(name="collide", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, name="collide-1")  # no worker: never contacted
    _, key = token_client(user_with(OPERATE, "mcp-collide"))
    monkeypatch.setattr(ScanTask._meta.get_field("id"), "_get_default", lambda: uuid.UUID(COLLIDING_ID))
    server = build_server(ScanpoolApi(ApiConfig(url=live_server.url, token=key)))

    async def call():
        from mcp import Client

        async with Client(server) as client:
            submitted = await client.call_tool("run_authenticated_scan", {
                "targets": "192.0.2.10", "name": "bad creds", "ssh_username": "root", "ssh_password": "bad",
                "scanner_pool": "collide"})
            return submitted, await client.call_tool("get_scan_status", {"task_id": ok(submitted)["task_id"]})

    submitted, status = anyio.run(call)
    answer = ok(submitted)
    assert answer["task_id"] == COLLIDING_ID and answer["links"]["status"].endswith(f"/{COLLIDING_ID}/")
    assert COLLIDING_ID in submitted.content[0].text
    assert answer["name"] == REDACTED + " creds"  # the password is still replaced where it stands
    assert ok(status)["task_id"] == COLLIDING_ID


# ------------------------------------------------------------------------------------------ answers stay parseable

def _redacted(result, password: str, tool: str = "run_authenticated_scan"):
    """``result`` through the middleware of a call whose ssh_password is ``password``, as the wire carries it."""
    from types import SimpleNamespace

    from mcp.types import CallToolResult

    async def call_next(ctx):
        return result

    ctx = SimpleNamespace(method="tools/call", params={"name": tool, "arguments": {"ssh_password": password}})
    answer = anyio.run(RedactSecrets(SecretRegistry()), ctx, call_next)
    wire = answer if isinstance(answer, dict) else json.loads(answer.model_dump_json(by_alias=True, exclude_none=True))
    return wire, CallToolResult.model_validate(wire)  # what the SDK's client does with it


def _answer(structured: dict, is_error: bool = False):
    from mcp.types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(type="text", text=render_text(structured, is_error))],
                          structured_content=structured, is_error=is_error)


@pytest.mark.parametrize("password", ["red", "Error", "x", "type", "text", "content", "error", "true"])
def test_redaction_scrubs_values_never_keys_or_protocol_fields(password):
    task_id = "73dfc0b1-df7d-4fc2-bad7-d9bda7fce99e"
    scan = {"task_id": task_id, "status": "queued", "name": f"scan {password} text", "links": {"type": "text"}}
    wire, parsed = _redacted(_answer(scan), password)
    assert set(wire) >= {"content", "structuredContent"} and wire["content"][0]["type"] == "text"
    assert parsed.structured_content["task_id"] == task_id and set(parsed.structured_content) == set(scan)
    assert parsed.structured_content["name"] == scan["name"].replace(password, REDACTED)
    assert json.loads(parsed.content[0].text) == parsed.structured_content  # the text is rebuilt, keys whole
    assert parsed.content[0].text == compact_json(parsed.structured_content)

    error = {"error": {"code": "out_of_scope", "message": f"targets: {password} is not allowed", "http_status": 403,
                       "field": "targets"}}
    wire, parsed = _redacted(_answer(error, True), password)
    assert wire["isError"] is True and parsed.is_error is True
    got = parsed.structured_content["error"]
    assert (got["code"], got["field"], got["http_status"]) == ("out_of_scope", "targets", 403)
    assert got["message"] == error["error"]["message"].replace(password, REDACTED)
    assert parsed.content[0].text == render_text(parsed.structured_content, True)


def test_redaction_of_a_text_that_is_not_the_structured_content():
    """The SDK's validation errors (no structured content): the text is scrubbed as text, its input quote dropped."""
    from mcp.types import CallToolResult, TextContent

    text = f"Error executing tool x: 1 validation error\ntargets\n  Field required [type=missing, input_value={{'ssh_" \
           f"password': '{PASSWORD}'}}, input_type=dict]"
    wire, parsed = _redacted(CallToolResult(content=[TextContent(type="text", text=text)], is_error=True), PASSWORD)
    assert wire["isError"] is True and "input withheld" in parsed.content[0].text and PASSWORD not in json.dumps(wire)


@pytest.mark.django_db(transaction=True)
def test_short_or_word_passwords_leave_the_answer_parseable(live_server, fresh_throttle_counts):
    """End to end: ``red`` (in structuredContent), ``Error`` (in isError), ``x`` (in "type":"text"): every answer
    parses in the SDK's client and carries its task_id whole, so the agent never submits the scan again."""
    pool = PoolFactory(name="words", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, name="words-1")  # no worker: never contacted
    _, key = token_client(user_with(OPERATE, "mcp-words"))
    server = build_server(ScanpoolApi(ApiConfig(url=live_server.url, token=key)))
    base = {"targets": "192.0.2.10", "name": "word test", "ssh_username": "root", "scanner_pool": "words"}

    async def scenario() -> None:
        from mcp import Client

        async with Client(server) as client:
            for password in ("red", "x", "Error"):
                submitted = await client.call_tool("run_authenticated_scan", {**base, "ssh_password": password})
                task_id = ok(submitted)["task_id"]
                assert task_id in submitted.content[0].text and json.loads(submitted.content[0].text)["task_id"]
                status = ok(await client.call_tool("get_scan_status", {"task_id": task_id}))
                assert status["task_id"] == task_id and status["status"] == "queued"
                refused = await client.call_tool("run_authenticated_scan", {**base, "targets": "10.0.0.1",
                                                                            "ssh_password": password})
                assert refused.is_error and tool_error(refused)["code"] == "out_of_scope"
            untrusted = await client.call_tool("run_untrusted_scan", {"targets": "192.0.2.10", "name": "u",
                                                                      "scanner_pool": "words", "ssh_password": "x"})
            error = tool_error(untrusted)  # refused as an unknown argument: nothing was created
            assert error["field"] == "ssh_password" and "run_authenticated_scan" in error["message"]

    anyio.run(scenario)
    assert ScanTask.objects.filter(name="word test").count() == 3 and not ScanTask.objects.filter(name="u").exists()
