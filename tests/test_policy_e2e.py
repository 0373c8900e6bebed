"""End to end: an agent's API token under a client policy (approval outside its pre-approved targets) submits
over HTTP to a live server; a real scanworker process runs scans on the Nessus emulator. The in-policy scan
runs at once; the other waits in pending_approval (while a free slot sits idle) until a staff user approves
it through the admin's bulk action; it then runs to completion."""

from __future__ import annotations

import pytest
import requests
from django.test import Client

from tasks.models import ApprovalRule, ScanTask, TaskStatus
from tests.api_support import SUBMIT
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.policy_support import policy_client
from tests.test_api_e2e import follow
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
DONE = {"completed", "failed", "timeout", "cancelled"}


def test_agent_scan_outside_pre_approved_targets_waits_for_admin_approval(
        live_server, emulator_factory, redis_conn, fresh_throttle_counts):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [2], name="agents", scope=["192.0.2.0/24"])
    token, _, _ = policy_client(
        "mcp-agent", pools=[pool], perms=SUBMIT, scan_types=["untrusted"], approval=ApprovalRule.OUTSIDE,
        pre_approved_targets=["192.0.2.0/28"], approvers="secops on-call", max_scans_per_day=10)
    worker = WorkerProcess().start()
    try:
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token.raw_key}"
        scans = f"{live_server.url}/api/v1/scans/"
        inside = api.post(scans, json={"name": "in policy", "targets": "192.0.2.10", "scanner_pool": "agents"},
                          timeout=10)
        outside = api.post(scans, json={"name": "needs approval", "targets": "192.0.2.100",
                                        "scanner_pool": "agents"}, timeout=10)
        assert inside.status_code == outside.status_code == 202, (inside.text, outside.text)
        assert inside.json()["status"] == "queued"
        held = outside.json()
        assert held["status"] == "pending_approval" and held["approval"]["required"] is True
        assert held["approval"]["approvers"].startswith("secops on-call")

        done = follow(api, inside.json()["links"]["status"], DONE, 90, worker)
        assert done["status"] == "completed", done
        waiting = api.get(held["links"]["status"], timeout=10).json()  # a slot was free all along: still waiting
        assert waiting["status"] == "pending_approval" and waiting["scanner_instance"] is None

        staff_user = token.user.__class__.objects.create_user("secops", password="pw-for-tests-only", is_staff=True)
        from django.contrib.auth.models import Permission

        staff_user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="tasks", codename__in=["view_scantask", "approve_scantask"]))
        admin = Client()
        admin.force_login(staff_user)
        response = admin.post("/admin/tasks/scantask/", {"action": "approve_tasks",
                                                         "_selected_action": [held["task_id"]]})
        assert response.status_code == 302, response.content[:2000]

        done = follow(api, held["links"]["status"], DONE, 90, worker)
        assert done["status"] == "completed", done
        assert ScanTask.objects.get(pk=held["task_id"]).approval_decided_by == "secops"
        actors = {(e["to_status"], e["actor"]) for e in done["events"]}
        assert (TaskStatus.QUEUED, "secops") in actors
        assert any(e["kind"] == "policy" and "held for approval" in e["message"] for e in done["events"])
    finally:
        worker.cleanup()
