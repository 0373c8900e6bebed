"""The MCP server's configuration and HTTP client, against small real HTTP servers on loopback: bad settings
are refused with the variable and the fix; redirects, non-API answers and dead addresses become tool errors."""

from __future__ import annotations

import http.server
import json
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


# ------------------------------------------------------------------------------------------ answer size bound

def _serve(rows: list, page: int, size: int, budget: int):
    """What get_scan_results does: the API's page (a slice, as the API pages), then fit_page."""
    from tasks.mcp.paging import fit_page

    offset = (page - 1) * size
    return fit_page(rows[offset:offset + size], page, size, budget)


@pytest.mark.parametrize("seed", range(6))
def test_reduced_pages_tile_the_rows_exactly_once(seed):
    import random

    from tasks.mcp.paging import json_size

    rnd = random.Random(seed)
    rows = [{"id": i, "text": "x" * rnd.choice([10, 200, 900, 3000])} for i in range(rnd.randint(50, 400))]
    budget = 8_000
    size = rnd.choice([7, 50, 120, 1000])
    seen, page = [], rnd.randint(1, min(3, (len(rows) - 1) // size + 1))
    seen += [r["id"] for r in rows[:(page - 1) * size]]  # an agent may start anywhere
    while True:
        fitted = _serve(rows, page, size, budget)
        assert json_size(fitted.rows) <= budget
        assert (fitted.page - 1) * fitted.page_size == len(seen)
        seen += [r["id"] for r in fitted.rows]
        if fitted.page >= fitted.pages(len(rows)):
            break
        page, size = fitted.page + 1, fitted.page_size
    assert seen == [r["id"] for r in rows]


def test_reduced_page_size_divides_the_offset_and_says_how_to_go_on():
    rows = [{"id": i, "text": "x" * 2000} for i in range(1000)]
    fitted = _serve(rows, 3, 300, 200_000)  # offset 600; about 97 rows fit; 75 is the largest divisor of 600 below
    assert (fitted.page, fitted.page_size) == (9, 75) and [r["id"] for r in fitted.rows] == list(range(600, 675))
    assert fitted.reduced["asked"] == 300 and fitted.reduced["served"] == 75
    assert "page=10, page_size=75" in fitted.reduced["reason"] and fitted.pages(1000) == 14
    small = _serve(rows, 1, 20, 200_000)
    assert small.reduced is None and small.truncated is None and (small.page, small.page_size) == (1, 20)


def test_a_row_larger_than_the_budget_comes_alone_with_its_texts_cut():
    from tasks.mcp.paging import fit_page, json_size

    huge = {"id": 7, "plugin_output": "A" * 1_000_000, "data": {"lines": ["l" * 50] * 20_000}, "severity": 4}
    fitted = fit_page([huge, {"id": 8}], 4, 2, 100_000)  # offset 6
    row = fitted.rows[0]
    assert (fitted.page, fitted.page_size) == (7, 1) and json_size(fitted.rows) <= 100_000
    assert row["id"] == 7 and row["severity"] == 4 and row["plugin_output"].startswith("A" * 64)
    assert "[cut by scanpool's MCP server: " in row["plugin_output"]
    assert "more items left out" in row["data"]["lines"][-1]
    assert set(fitted.truncated["fields"]) >= {"plugin_output", "data.lines"}
    assert huge["plugin_output"] == "A" * 1_000_000  # the row fetched is not changed in place


# ------------------------------------------------------------------------------------------ arguments

def _offline_server():
    return build_server(ScanpoolApi(ApiConfig(url=f"http://127.0.0.1:{free_port()}", token="sp_test")))


def test_tools_list_forbids_unknown_arguments_and_is_honest_about_credentials():
    tools = {t.name: t for t in anyio.run(_offline_server().list_tools)}
    for tool in tools.values():
        assert tool.input_schema["additionalProperties"] is False, tool.name
    password = tools["run_authenticated_scan"].input_schema["properties"]["ssh_password"]
    assert password["type"] == ["string", "null"] and password["writeOnly"] is True and password["default"] is None
    assert tools["get_scan_results"].input_schema["$defs"]["ResultFilters"]["additionalProperties"] is False


@pytest.mark.parametrize(("tool", "arguments", "field", "words"), [
    ("list_tasks", {"status": "running"}, "status", ["did you mean status_filter?"]),
    ("list_tasks", {"target": "192.0.2.1"}, "target", ["did you mean target_filter?"]),
    ("get_scan_status", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "bogus": 1}, "bogus",
     ["unknown argument 'bogus'", "task_id, include_events"]),
    ("list_pools", {"pool": "demo"}, "pool", ["unknown argument 'pool': leave it out (list_pools takes no arguments)"]),
    ("run_untrusted_scan", {"targets": "192.0.2.1", "name": "n", "ssh_password": "Sekr1t-value"}, "ssh_password",
     ["takes no credentials", "run_authenticated_scan"]),
    ("get_scan_results", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "view": "plugins", "ordering": "host"},
     "ordering", ["view=\"plugins\" takes no ordering"]),
    ("get_scan_results", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "view": "hosts", "profile": "summary"},
     "profile", ["view=\"hosts\" takes no profile"]),
    ("get_scan_status", {"task_id": "abc"}, "task_id", ["not a task id"]),
])
def test_wrong_arguments_are_refused_by_name_before_any_api_call(tool, arguments, field, words):
    error = tool_error(call(_offline_server(), tool, arguments))
    assert error["field"] == field and error["code"] == "invalid", error
    for word in words:
        assert word in error["message"], error
    assert "Sekr1t-value" not in json.dumps(error)


@pytest.mark.parametrize(("tool", "arguments", "field"), [
    ("run_untrusted_scan", {"targets": "192.0.2.1", "name": "n", "timeout_seconds": "3600"}, "timeout_seconds"),
    ("get_scan_status", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "include_events": "true"},
     "include_events"),
    ("get_scan_results", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "page": "2"}, "page"),
    ("get_scan_results", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21",
                          "filters": {"exploit_available": "yes"}}, "exploit_available"),
])
def test_strings_are_not_coerced_to_numbers_or_booleans(tool, arguments, field):
    result = call(_offline_server(), tool, arguments)
    assert result.is_error and field in result.content[0].text and "api_unreachable" not in result.content[0].text


@pytest.mark.parametrize(("tool", "arguments"), [
    ("list_tasks", {"status_filter": "[\"queued\", \"running\"]"}),  # Claude Desktop's JSON-encoded list
    ("get_scan_results", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "view": "hosts",
                          "filters": "{\"verdict\": \"failed\"}"}),
    ("get_scan_results", {"task_id": "3f0c5e1a-9b7d-4c1e-8f2a-0d6b5e4c3a21", "view": "plugins"}),
])
def test_valid_arguments_reach_the_api(tool, arguments):
    assert tool_error(call(_offline_server(), tool, arguments))["code"] == "api_unreachable"


def test_api_field_names_become_the_tools_arguments():
    from tasks.mcp.errors import for_tool

    both = for_tool(ApiError(400, "required", "credentials.password: give exactly one of password or private_key",
                             "credentials.password"), "run_authenticated_scan")
    assert both.field == "ssh_password"
    assert both.message == "ssh_password: give exactly one of ssh_password or ssh_private_key"
    status = for_tool(ApiError(400, "invalid", "status: unknown status 'x'", "status"), "list_tasks")
    assert (status.field, status.message) == ("status_filter", "status_filter: unknown status 'x'")
    severity = for_tool(ApiError(400, "invalid_filter", "severity: bad", "severity"), "get_scan_results")
    assert severity.field == "filters.severity"
    untouched = ApiError(403, "out_of_scope", "targets: no", "targets")
    assert for_tool(untouched, "run_untrusted_scan") == untouched


# ------------------------------------------------------------------------------------------ Origin

def test_origin_check_refuses_foreign_browser_origins():
    from tasks.mcp.server import LOOPBACK_ORIGINS, OriginCheckApp, allowed_origins

    calls = []

    async def app(scope, receive, send):
        calls.append(scope.get("headers"))

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    guarded = OriginCheckApp(app, ["https://agent.example.com", *LOOPBACK_ORIGINS])

    async def run(headers, kind="http"):
        await guarded({"type": kind, "headers": headers}, None, send)

    for headers in ([], [(b"origin", b"https://agent.example.com")], [(b"Origin", b"http://localhost:6274")]):
        anyio.run(run, headers)
    assert len(calls) == 3 and not sent
    for origin in (b"http://evil.example", b"https://agent.example.com.evil.example", b"null",
                   b"http://localhost.evil.example:80"):
        anyio.run(run, [(b"origin", origin)])
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [403] * 4 and len(calls) == 3
    body = json.loads(sent[1]["body"])
    assert body["error"] == "origin_not_allowed" and "SCANPOOL_MCP_ALLOWED_ORIGINS" in body["error_description"]
    anyio.run(run, [(b"origin", b"http://evil.example")], "websocket")
    assert sent[-1] == {"type": "websocket.close", "code": 1008}

    assert allowed_origins({}) == []
    assert allowed_origins({"SCANPOOL_MCP_ALLOWED_ORIGINS": " https://a.example/, http://localhost:* "}) == [
        "https://a.example", "http://localhost:*"]
    for bad in ("a.example", "https://a.example/path", "*"):
        with pytest.raises(ConfigError, match="SCANPOOL_MCP_ALLOWED_ORIGINS"):
            allowed_origins({"SCANPOOL_MCP_ALLOWED_ORIGINS": bad})


def test_an_allowed_origin_written_in_capitals_lets_browsers_in_on_loopback_too():
    """Browsers send an Origin's host in lower case. On a loopback bind the SDK's own guard compared the configured
    origins as written (case-sensitive): SCANPOOL_MCP_ALLOWED_ORIGINS=https://Agent.Example.com passed scanpool's
    check but got the SDK's 403 for every request from that page."""
    from mcp.server.transport_security import TransportSecurityMiddleware

    from tasks.mcp.server import allowed_origins, sdk_security

    origins = allowed_origins({"SCANPOOL_MCP_ALLOWED_ORIGINS": "https://Agent.Example.com, HTTP://Tools.Example.com:*"})
    assert origins == ["https://agent.example.com", "http://tools.example.com:*"]
    guard = TransportSecurityMiddleware(sdk_security("127.0.0.1", origins))
    assert guard._validate_origin("https://agent.example.com")
    assert guard._validate_origin("http://tools.example.com:8080")
    assert not guard._validate_origin("https://evil.example.com")
    assert sdk_security("0.0.0.0", origins) is None  # off loopback only scanpool's own check (case-insensitive)


def test_a_private_hop_behind_the_tls_proxy_is_addressed_as_the_public_site(live_server, settings,
                                                                             fresh_throttle_counts):
    """Docker Compose: the MCP server calls http://web:8000, gunicorn behind the site's TLS proxy. With
    DJANGO_DEBUG=0 the web process answers only its public host name (a Host of web:8000 is a 400) and redirects
    what did not come through the proxy to https (which the MCP client refuses to follow): with
    SCANPOOL_API_PUBLIC_URL it sends what the proxy would, the public Host and X-Forwarded-Proto."""
    from tests.api_support import OPERATE, token_client, user_with

    settings.ALLOWED_HOSTS = ["scanpool.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    _, key = token_client(user_with(OPERATE, "mcp-compose"))
    env = {"SCANPOOL_API_URL": live_server.url, "SCANPOOL_API_TOKEN": key}
    with pytest.raises(ApiError):
        ScanpoolApi(ApiConfig.from_env(env)).request("GET", "pools/")
    config = ApiConfig.from_env({**env, "SCANPOOL_API_PUBLIC_URL": "https://scanpool.example.com/"})
    assert config.public_url == "https://scanpool.example.com"
    api = ScanpoolApi(config)
    assert api.session.headers["Host"] == "scanpool.example.com"
    assert api.session.headers["X-Forwarded-Proto"] == "https"
    assert api.request("GET", "pools/") == []  # answered (no pool in this test), not refused
    with pytest.raises(ConfigError, match="SCANPOOL_API_PUBLIC_URL"):
        ApiConfig.from_env({**env, "SCANPOOL_API_PUBLIC_URL": "scanpool.example.com"})
