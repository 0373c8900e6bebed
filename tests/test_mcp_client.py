"""The MCP server's configuration and HTTP client, against small real HTTP servers on loopback: bad settings
are refused with the variable and the fix; redirects, non-API answers and dead addresses become tool errors."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import anyio
import pytest

from tasks.mcp.client import ApiConfig, ApiError, ConfigError, ScanpoolApi, cursor_of, is_loopback
from tasks.mcp.server import BearerTokenApp, build_server, mcp_token
from tests.mcp_support import ROOT, free_port, tool_error


def test_config_from_env(tmp_path):
    config = ApiConfig.from_env({"SCANPOOL_API_URL": "https://scanpool.example.com/api/v1/", "SCANPOOL_API_TOKEN": "k"})
    assert config.url == "https://scanpool.example.com" and config.token == "k"
    assert "k" not in repr(config)
    assert ApiConfig.from_env({"SCANPOOL_API_TOKEN": "k"}).url == "http://127.0.0.1:8000"
    token_file = tmp_path / "token"
    token_file.write_text("sp_from_file\n")
    assert ApiConfig.from_env({"SCANPOOL_API_TOKEN_FILE": str(token_file)}).token == "sp_from_file"
    assert not ApiConfig.from_env({"SCANPOOL_API_TOKEN": "k"}).sends_token_in_clear
    assert ApiConfig.from_env({"SCANPOOL_API_URL": "http://10.1.2.3:8000", "SCANPOOL_API_TOKEN": "k"}
                              ).sends_token_in_clear


@pytest.mark.parametrize(("env", "message"), [
    ({}, "SCANPOOL_API_TOKEN is not set"),
    ({"SCANPOOL_API_TOKEN_FILE": "/nonexistent/token"}, "SCANPOOL_API_TOKEN_FILE: cannot read"),
    ({"SCANPOOL_API_TOKEN": "k", "SCANPOOL_API_URL": "ftp://x"}, "SCANPOOL_API_URL"),
    ({"SCANPOOL_API_TOKEN": "k", "SCANPOOL_API_URL": "https://u:p@x.example"}, "not in the URL"),
    ({"SCANPOOL_API_TOKEN": "k", "SCANPOOL_API_TIMEOUT": "soon"}, "SCANPOOL_API_TIMEOUT"),
])
def test_config_errors_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        ApiConfig.from_env(env)


def test_mcp_token_rules():
    assert mcp_token("127.0.0.1", {}) is None
    assert mcp_token("::1", {}) is None and mcp_token("localhost", {}) is None
    assert mcp_token("0.0.0.0", {"SCANPOOL_MCP_TOKEN": "x" * 16}) == "x" * 16
    with pytest.raises(ConfigError, match="without a bearer token"):
        mcp_token("0.0.0.0", {})
    with pytest.raises(ConfigError, match="too short"):
        mcp_token("127.0.0.1", {"SCANPOOL_MCP_TOKEN": "short"})
    assert is_loopback("127.8.9.10") and not is_loopback("192.0.2.1") and not is_loopback("example.com")


def test_bearer_app_compares_the_whole_header():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    guarded = BearerTokenApp(app, "t" * 20)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def run(headers, kind="http"):
        await guarded({"type": kind, "headers": headers}, None, send)

    anyio.run(run, [(b"authorization", b"Bearer " + b"t" * 20)])
    anyio.run(run, [(b"Authorization", b"Bearer " + b"t" * 19)])
    anyio.run(run, [])
    anyio.run(run, [], "lifespan")
    anyio.run(run, [], "websocket")
    assert calls == ["http", "lifespan"]
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [401, 401]
    assert sent[-1] == {"type": "websocket.close", "code": 1008}


def test_cursor_of():
    assert cursor_of("http://x/api/v1/scans/?cursor=cD0y&page_size=1") == "cD0y"
    assert cursor_of(None) is None and cursor_of("http://x/api/v1/scans/") is None


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if "pools" in self.path:
            self.send_response(302)
            self.send_header("Location", "http://203.0.113.9/steal")
            self.end_headers()
        elif "scanners" in self.path:
            body = b"<html>proxy error</html>"
            self.send_response(502)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            body = b"hello"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def odd_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_turns_odd_answers_into_api_errors(odd_server):
    api = ScanpoolApi(ApiConfig(url=odd_server, token="sp_test"))
    with pytest.raises(ApiError) as redirect:
        api.pools()
    assert redirect.value.code == "redirect_refused" and "203.0.113.9" in redirect.value.message
    with pytest.raises(ApiError) as proxy:
        api.scanners()
    assert proxy.value.code == "bad_response" and proxy.value.status == 502
    with pytest.raises(ApiError) as not_json:
        api.scans()
    assert not_json.value.code == "bad_response"
    with pytest.raises(ApiError) as bad_id:
        api.scan("../../admin")
    assert bad_id.value.field == "task_id"
    with pytest.raises(ApiError) as bad_pool:
        api.pool("a/b")
    assert bad_pool.value.field == "scanner_pool"


def call(server, name: str, arguments: dict):
    async def run():
        from mcp import Client

        async with Client(server) as client:
            return await client.call_tool(name, arguments)

    return anyio.run(run)


def test_unreachable_api_is_a_tool_error():
    server = build_server(ScanpoolApi(ApiConfig(url=f"http://127.0.0.1:{free_port()}", token="sp_test")))
    error = tool_error(call(server, "list_pools", {}))
    assert error["code"] == "api_unreachable" and "SCANPOOL_API_URL" in error["message"]


def test_validate_takes_only_nessus_files(tmp_path):
    server = build_server(ScanpoolApi(ApiConfig(url=f"http://127.0.0.1:{free_port()}", token="sp_test")))
    link = tmp_path / "passwd.nessus"
    link.symlink_to("/etc/passwd")
    assert tool_error(call(server, "validate_scan_results", {"path": str(link)}))["field"] == "path"
    assert tool_error(call(server, "validate_scan_results", {"path": "/etc/passwd"}))["field"] == "path"
    missing = tool_error(call(server, "validate_scan_results", {"path": str(tmp_path / "none.nessus")}))
    assert missing["code"] == "not_found"


def test_the_mcp_package_imports_no_django():
    """The server may run on another machine: importing it (as scanpool-mcp does) loads no Django or app model."""
    import subprocess
    import sys

    code = ("import sys, tasks.mcp.server; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('django', 'rest_framework', 'pools', 'scanners', 'scanpool_site') or m in ('tasks.models', "
            "'tasks.services')); print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
