"""The Nessus client over a real loopback socket that breaks off answers mid-body (what a proxy, a restart or a
flaky network does): a cut answer is a transient failure, retried for safe calls, never a permanent one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scanners.adapters.base import TransientScannerError
from scanners.adapters.nessus import NessusAdapter
from tests.emulator import free_port_block


class CuttingServer:
    """Answers ``Content-Length: 1000`` with the first ``cut`` requests' bodies broken off after a few bytes,
    then whole answers (a running scan)."""

    BODY = b'{"info": {"status": "running", "progress": 40, "uuid": "u-1"}, "hosts": []}'

    def __init__(self, cut: int) -> None:
        self.cut = cut
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                owner.paths.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if len(owner.paths) <= owner.cut:
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(owner.BODY[:20])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(owner.BODY)))
                self.end_headers()
                self.wfile.write(owner.BODY)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port_block(1)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cutting() -> Iterator[type[CuttingServer]]:
    servers: list[CuttingServer] = []

    def make(cut: int) -> CuttingServer:
        servers.append(CuttingServer(cut))
        return servers[-1]

    yield make  # type: ignore[misc]
    for server in servers:
        server.close()


def adapter_for(server: CuttingServer) -> NessusAdapter:
    return NessusAdapter(server.url, access_key="a", secret_key="b", backoff=0.01)


def test_an_answer_cut_off_once_is_retried_for_a_read(cutting):
    server = cutting(cut=1)
    state = adapter_for(server).scan_state(5)
    assert (state.status, state.progress) == ("running", 40)
    assert server.paths == ["GET /scans/5", "GET /scans/5"]


def test_an_answer_that_keeps_breaking_off_is_transient_not_permanent(cutting):
    server = cutting(cut=10)
    with pytest.raises(TransientScannerError, match="broke off") as caught:
        adapter_for(server).scan_state(5)
    assert "it will be retried later" in caught.value.message
    assert len(server.paths) == 3  # the read and its 2 quick retries


def test_a_launch_whose_answer_broke_off_is_not_sent_again_and_its_outcome_is_unknown(cutting):
    server = cutting(cut=10)
    with pytest.raises(TransientScannerError, match="outcome is unknown"):
        adapter_for(server).launch_scan(5)
    assert server.paths == ["POST /scans/5/launch"]
