"""The MCP server over streamable HTTP: ``scanpool-mcp --transport http`` as a subprocess on a free loopback
port, the SDK's streamable-HTTP client, the real app, a worker and the emulator. Its bearer token is required
(401 otherwise), and it refuses to start off loopback without one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import requests
from mcp import MCPError

from tests.api_support import OPERATE, token_client, user_with
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.mcp_support import MCP_TOKEN, ROOT, HttpMcpServer, follow, http_session, ok, server_env
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration
# Only the tests that serve requests reach the database: the refusals at start-up never do, so `make test` runs them
# in one lane, not in both (tests/conftest.py, --database-free-part).
uses_the_app = pytest.mark.django_db(transaction=True)

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@uses_the_app
def test_http_transport_requires_its_bearer_token_and_runs_a_scan(live_server, emulator_factory,  # noqa: F811
                                                                   redis_conn, fresh_throttle_counts):
    emu = emulator_factory(instances=1, scan_seconds=1)
    _, (scanner,) = emulated_pool(emu, [1], name="mcp-http", scope=["192.0.2.0/24"])
    _, key = token_client(user_with(OPERATE, "mcp-http-agent"))
    server = HttpMcpServer(server_env(live_server.url, key, SCANPOOL_MCP_TOKEN=MCP_TOKEN)).start()
    worker = WorkerProcess(pools=["mcp-http"]).start()
    try:
        # Plain HTTP first: no token, a wrong one, a token of the wrong scheme: 401 before any MCP handling.
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"},
                        {"Authorization": f"Token {MCP_TOKEN}"}, {"Authorization": f"Bearer {MCP_TOKEN}x"}):
            refused = requests.post(server.url, json=INITIALIZE, headers={**MCP_HEADERS, **headers}, timeout=10)
            assert refused.status_code == 401, (headers, refused.text)
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert refused.json()["error"] == "invalid_token" and "SCANPOOL_MCP_TOKEN" in refused.text
        accepted = requests.post(server.url, json=INITIALIZE, timeout=10,
                                 headers={**MCP_HEADERS, "Authorization": f"Bearer {MCP_TOKEN}"})
        assert accepted.status_code == 200, accepted.text

        async def without_token() -> None:
            async with http_session(server.url, None) as session:
                await session.list_tools()

        with pytest.raises(BaseException) as refused_sdk:  # the SDK client cannot even initialize
            anyio.run(without_token)
        assert any(isinstance(e, MCPError) and "error response" in str(e) for e in _leaves(refused_sdk.value))

        async def scenario() -> None:
            async with http_session(server.url, MCP_TOKEN) as session:
                tools = {t.name for t in (await session.list_tools()).tools}
                assert {"run_untrusted_scan", "get_scan_results", "cancel_scan"} <= tools and len(tools) == 11
                submitted = ok(await session.call_tool("run_untrusted_scan", {
                    "targets": "192.0.2.40", "name": "over http", "scanner_pool": "mcp-http"}))
                done = await follow(session, submitted["task_id"], log=worker.log)
                assert done["status"] == "completed" and done["scanner_instance"] == scanner.name
                page = ok(await session.call_tool("get_scan_results", {"task_id": submitted["task_id"],
                                                                       "page_size": 1, "profile": "minimal"}))
                assert page["total"] >= 1 and len(page["untrusted_scanner_text"]["content"]["findings"]) == 1
                auth = ok(await session.call_tool("run_authenticated_scan", {
                    "targets": "192.0.2.41", "name": "auth over http", "ssh_username": "root",
                    "ssh_password": "good", "scan_type": "authenticated", "scanner_pool": "mcp-http"}))
                done = await follow(session, auth["task_id"], log=worker.log)
                assert done["status"] == "completed" and done["authentication_status"] == "success"

        anyio.run(scenario)
    finally:
        worker.cleanup()
        server.cleanup()


def _leaves(exc: BaseException):
    """Every exception inside (exception groups, causes, contexts)."""
    seen, stack = set(), [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen or current is None:
            continue
        seen.add(id(current))
        yield current
        stack.extend(getattr(current, "exceptions", ()) or ())
        stack += [current.__cause__, current.__context__]


def _script() -> str:
    return str(Path(sys.executable).with_name("scanpool-mcp"))


@pytest.mark.parametrize(("host", "token", "expected"), [
    ("0.0.0.0", None, "without a bearer token"),
    ("192.0.2.1", None, "without a bearer token"),
    ("127.0.0.1", "short", "too short"),
])
def test_http_transport_refuses_to_start_without_a_usable_token(host, token, expected):
    env = server_env("http://127.0.0.1:9", "sp_unused", **({"SCANPOOL_MCP_TOKEN": token} if token else {}))
    done = subprocess.run([_script(), "--transport", "http", "--host", host, "--port", "9"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert expected in done.stderr and "SCANPOOL_MCP_TOKEN" in done.stderr


def test_missing_api_token_is_refused_at_start():
    env = server_env("http://127.0.0.1:9", "")
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "mcp_server"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "SCANPOOL_API_TOKEN is not set" in done.stderr


@uses_the_app
def test_loopback_without_token_serves(live_server, fresh_throttle_counts):
    _, key = token_client(user_with(OPERATE, "mcp-local"))
    server = HttpMcpServer(server_env(live_server.url, key)).start()
    try:
        async def scenario() -> None:
            async with http_session(server.url, None) as session:
                assert ok(await session.call_tool("list_pools", {}))["pools"] == []

        anyio.run(scenario)
        assert "without a bearer token" in server.log()
        rebound = requests.post(server.url, json=INITIALIZE, timeout=10,
                                headers={**MCP_HEADERS, "Host": f"attacker.example:{server.port}"})
        assert rebound.status_code == 421  # DNS rebinding: a web page cannot reach the loopback server
        foreign = requests.post(server.url, json=INITIALIZE, timeout=10,
                                headers={**MCP_HEADERS, "Origin": "http://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"] == "origin_not_allowed"
        local = requests.post(server.url, json=INITIALIZE, timeout=10,
                              headers={**MCP_HEADERS, "Origin": "http://localhost:6274"})
        assert local.status_code == 200, local.text  # the SDK's loopback rule, kept: a local inspector page
    finally:
        server.cleanup()


@uses_the_app
def test_origin_is_checked_off_loopback(live_server, fresh_throttle_counts):
    """Bound to 0.0.0.0 (the SDK guards nothing there): a request with a foreign Origin gets 403, with or without the
    bearer token; SCANPOOL_MCP_ALLOWED_ORIGINS allows one; agents (no Origin) are served."""
    _, key = token_client(user_with(OPERATE, "mcp-origin"))
    env = server_env(live_server.url, key, SCANPOOL_MCP_TOKEN=MCP_TOKEN,
                     SCANPOOL_MCP_ALLOWED_ORIGINS="https://agent.example.com")
    server = HttpMcpServer(env, host="0.0.0.0").start()
    bearer = {**MCP_HEADERS, "Authorization": f"Bearer {MCP_TOKEN}"}
    try:
        for headers in (bearer, MCP_HEADERS):
            for origin in ("http://evil.example", "https://agent.example.com.evil.example", "null"):
                refused = requests.post(server.url, json=INITIALIZE, timeout=10, headers={**headers, "Origin": origin})
                assert refused.status_code == 403, (origin, refused.text)
                body = refused.json()
                assert body["error"] == "origin_not_allowed" and "SCANPOOL_MCP_ALLOWED_ORIGINS" in body[
                    "error_description"]
        allowed = requests.post(server.url, json=INITIALIZE, timeout=10,
                                headers={**bearer, "Origin": "https://agent.example.com"})
        assert allowed.status_code == 200, allowed.text
        assert requests.post(server.url, json=INITIALIZE, timeout=10, headers=bearer).status_code == 200
        no_token = requests.post(server.url, json=INITIALIZE, timeout=10,
                                 headers={**MCP_HEADERS, "Origin": "https://agent.example.com"})
        assert no_token.status_code == 401  # an allowed origin still needs the token

        async def agent() -> None:
            async with http_session(server.url, MCP_TOKEN) as session:
                assert ok(await session.call_tool("list_pools", {}))["pools"] == []

        anyio.run(agent)
    finally:
        server.cleanup()


def test_a_malformed_origin_list_is_refused_at_start():
    env = server_env("http://127.0.0.1:9", "sp_unused", SCANPOOL_MCP_ALLOWED_ORIGINS="agent.example.com/path")
    done = subprocess.run([_script(), "--transport", "http", "--port", "9"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "SCANPOOL_MCP_ALLOWED_ORIGINS" in done.stderr, done
