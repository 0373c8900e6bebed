"""Helpers of tests/test_mcp_*.py: the MCP server as a real subprocess (stdio or streamable HTTP), reached with
the ``mcp`` SDK's own client, in front of the real app (pytest-django's live_server), a worker and the emulator."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"completed", "failed", "timeout", "cancelled"}
MCP_TOKEN = "mcp-test-token-0123456789abcdef"


def server_env(api_url: str, api_token: str, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    for name in ("SCANPOOL_API_TOKEN", "SCANPOOL_API_TOKEN_FILE", "SCANPOOL_MCP_TOKEN"):
        env.pop(name, None)
    env.update({"SCANPOOL_API_URL": api_url, "SCANPOOL_API_TOKEN": api_token, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


@asynccontextmanager
async def stdio_session(env: dict[str, str], errlog) -> AsyncIterator[ClientSession]:
    """``manage.py mcp_server`` (stdio) spawned by the SDK's stdio client."""
    params = StdioServerParameters(command=sys.executable, args=[str(ROOT / "manage.py"), "mcp_server"], env=env,
                                   cwd=str(ROOT))
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpMcpServer:
    """``scanpool-mcp --transport http`` (the console script) as a subprocess on a free port (loopback by default)."""

    def __init__(self, env: dict[str, str], *args: str, host: str = "127.0.0.1") -> None:
        self.env = env
        self.args = list(args)
        self.host = host  # bind address; the tests connect to 127.0.0.1 (0.0.0.0 includes it)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def command(self) -> list[str]:
        script = Path(sys.executable).with_name("scanpool-mcp")
        return [str(script), "--transport", "http", "--host", self.host, "--port", str(self.port), *self.args]

    def start(self, timeout: float = 20.0) -> HttpMcpServer:
        log = tempfile.NamedTemporaryFile(prefix="scanpool-mcp-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scanpool-mcp exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"scanpool-mcp did not listen on {self.port}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        if self.log_path and self.log_path.exists():
            self.log_path.unlink()


def structured(result) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return result.structured_content


def ok(result) -> dict[str, Any]:
    assert not result.is_error, result.content
    return structured(result)


def tool_error(result) -> dict[str, Any]:
    """The ``error`` object of a tool error (isError, API code and message)."""
    assert result.is_error, result
    error = structured(result)["error"]
    assert error["code"] and error["message"], error
    assert error["code"] in result.content[0].text and error["message"] in result.content[0].text
    return error


async def follow(session: ClientSession, task_id: str, timeout: float = 90.0, log=lambda: "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = ok(await session.call_tool("get_scan_status", {"task_id": task_id}))
        if status["status"] in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"scan still {status['status']} after {timeout}s\n{log()[-3000:]}")
        await anyio.sleep(0.3)
