"""Issue #8 (low): a results download from a scanner is capped by SCANPOOL_MAX_RESULT_BYTES. Streaming stops at
the cap, the partial file is removed, and the task fails with a message naming the setting."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scanners.adapters.base import ResultsTooLargeError
from scanners.adapters.nessus import NessusAdapter
from tasks.models import ScanTask
from tasks.services import submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, run_until


class EndlessExport(BaseHTTPRequestHandler):
    """A scanner whose export is 64 MiB, sent without Content-Length (close-delimited, HTTP/1.0)."""

    finished: list[bool] = []

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # POST /scans/1/export
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._json({"file": 7, "token": "tok"})

    def do_GET(self) -> None:
        if self.path.endswith("/status"):
            self._json({"status": "ready"})
            return
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(1024):
                self.wfile.write(b"<" * 65536)
            EndlessExport.finished.append(True)
        except OSError:  # the client hung up at the cap
            EndlessExport.finished.append(False)


@pytest.fixture
def endless_scanner():
    EndlessExport.finished = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EndlessExport)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_streaming_stops_at_the_cap_and_removes_the_partial_file(endless_scanner, tmp_path):
    adapter = NessusAdapter(endless_scanner, access_key="a", secret_key="b", retries=0,
                            max_result_bytes=256 * 1024)
    with pytest.raises(ResultsTooLargeError) as caught:
        adapter.export_results(1, tmp_path / "out" / "r.nessus")
    assert "SCANPOOL_MAX_RESULT_BYTES (262144 bytes)" in caught.value.message
    assert list((tmp_path / "out").iterdir()) == []  # no partial file, no result
    adapter.close()
    for _ in range(50):
        if EndlessExport.finished:
            break
        threading.Event().wait(0.1)
    assert EndlessExport.finished == [False]  # the 64 MiB were not all read


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_task_fails_with_a_message_naming_the_setting(emulator, redis_conn, settings):  # noqa: F811
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0, 0]
    settings.SCANPOOL_MAX_RESULT_BYTES = 200  # every .nessus export is larger (Content-Length says so)
    pool, _scanners = emulated_pool(emulator, [1], scope=["192.0.2.0/24"])
    task = submit(pool=pool.name, name="too-big", targets=["192.0.2.10"])
    run_until([pool], lambda: ScanTask.objects.get(pk=task.pk).is_terminal, timeout=60)
    task.refresh_from_db()
    assert task.status == "failed", (task.status, task.error_message)
    assert "larger than SCANPOOL_MAX_RESULT_BYTES (200 bytes)" in task.error_message
    assert "refused" not in task.error_message
    tmp_dir = Path(settings.SCANPOOL_RESULTS_DIR) / "tmp"
    assert not tmp_dir.exists() or list(tmp_dir.iterdir()) == []
    assert emulator.control(0).launches_for("too-big") == 1
