"""End to end through the API: a real HTTP server (pytest-django's live_server), a real scanworker process,
the Nessus emulator; the test only speaks HTTP to the API (requests), like any client."""

from __future__ import annotations

import time

import pytest
import requests

from tests.api_support import OPERATE, token_client, user_with
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def follow(session: requests.Session, url: str, until: set[str], timeout: float, worker: WorkerProcess) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = session.get(url, timeout=10).json()
        if data["status"] in until:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"scan still {data['status']} after {timeout}s\n{worker.log()[-3000:]}")
        time.sleep(0.3)


def test_submit_follow_and_read_results_over_http(live_server, emulator_factory, redis_conn,  # noqa: F811
                                                    fresh_throttle_counts):
    emu = emulator_factory(instances=1, scan_seconds=1)
    _, (scanner,) = emulated_pool(emu, [1], name="e2e", scope=["192.0.2.0/24"])
    _, key = token_client(user_with(OPERATE, "e2e-client"))
    worker = WorkerProcess().start()
    try:
        api = requests.Session()
        api.headers["Authorization"] = f"Token {key}"
        base = f"{live_server.url}/api/v1"
        index = api.get(f"{base}/", timeout=10).json()
        submitted = api.post(index["scans"], json={
            "name": "e2e auth", "targets": "192.0.2.10, 192.0.2.11", "scanner_pool": "e2e",
            "scan_type": "authenticated", "credentials": {"username": "root", "password": "good"},
            "idempotency_key": "e2e-1"}, timeout=10)
        assert submitted.status_code == 202, submitted.text
        task = submitted.json()
        again = api.post(index["scans"], json={
            "name": "e2e auth", "targets": "192.0.2.10, 192.0.2.11", "scanner_pool": "e2e",
            "scan_type": "authenticated", "credentials": {"username": "root", "password": "good"},
            "idempotency_key": "e2e-1"}, timeout=10)
        assert again.status_code == 200 and again.json()["task_id"] == task["task_id"]

        done = follow(api, task["links"]["status"], {"completed", "failed", "timeout", "cancelled"}, 90, worker)
        assert done["status"] == "completed", done
        assert done["scanner_instance"] == scanner.name and done["scanner_url"] == scanner.url
        assert done["authentication_status"] == "success" and done["results_summary"]
        assert any("scanner" in e["message"] or e["kind"] == "scanner" for e in done["events"])

        page = api.get(task["links"]["results"], params={"severity": ">=0", "page_size": 5}, timeout=10).json()
        assert page["total"] > 0 and len(page["results"]) <= 5
        lines = api.get(task["links"]["results"], headers={"Accept": "application/x-ndjson"}, timeout=10)
        assert len(lines.text.splitlines()) == page["total"]
        hosts = api.get(task["links"]["hosts"], timeout=10).json()
        assert {h["name"] for h in hosts["results"]} == {"192.0.2.10", "192.0.2.11"}
        assert all(h["auth"]["verdict"] == "success" for h in hosts["results"])
        raw = api.get(task["links"]["raw"], timeout=10)
        assert raw.status_code == 200 and b"NessusClientData_v2" in raw.content[:2000]
        validated = api.post(index["validate"], files={"file": ("scan.nessus", raw.content)}, timeout=30).json()
        assert validated["hosts"] == 2 and validated["verdict"] == "success"

        listed = api.get(index["scans"], params={"target": "192.0.2.11", "status": "completed"}, timeout=10).json()
        assert [t["task_id"] for t in listed["results"]] == [task["task_id"]]
        pools = api.get(index["pools"], timeout=10).json()
        assert pools[0]["name"] == "e2e" and pools[0]["active"] == 0
        assert "good" not in submitted.text + again.text + str(done)
    finally:
        worker.cleanup()
