"""End to end through the MCP server: an agent whose API token has a client policy (approval outside its
pre-approved targets, untrusted scans only) uses the real MCP server (stdio subprocess) in front of the live
app, a real worker and the emulator. Its in-policy scan runs at once; its other scan waits in
pending_approval (the answer tells the agent who approves and not to resubmit) until a staff user approves it
with the admin action; it then completes. A refused scan type is a tool error with the policy's reason."""

from __future__ import annotations

import anyio
import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tasks.models import ApprovalRule, ScanTask, TaskStatus
from tests.api_support import SUBMIT, user_with
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.mcp_support import follow, ok, server_env, stdio_session, tool_error
from tests.policy_support import policy_client
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def approve_in_admin(task_id: str) -> None:
    staff = user_with([], "secops")
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="tasks", codename__in=["view_scantask", "approve_scantask"]))
    admin = Client()
    admin.force_login(staff)
    response = admin.post("/admin/tasks/scantask/", {"action": "approve_tasks", "_selected_action": [task_id]})
    assert response.status_code == 302, response.content[:2000]


def test_agent_through_mcp_waits_for_approval_outside_its_pre_approved_targets(
        live_server, emulator_factory, redis_conn, fresh_throttle_counts, tmp_path):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [2], name="agents", scope=["192.0.2.0/24"])
    token, _, _ = policy_client(
        "mcp-agent", pools=[pool], perms=[*SUBMIT, "tasks.change_scantask"], scan_types=["untrusted"],
        approval=ApprovalRule.OUTSIDE, pre_approved_targets=["192.0.2.0/28"], approvers="secops on-call")
    worker = WorkerProcess(pools=["agents"]).start()
    env = server_env(live_server.url, token.raw_key)
    errlog_path = tmp_path / "mcp-stderr.log"

    async def scenario() -> None:
        with errlog_path.open("w") as errlog:
            async with stdio_session(env, errlog) as session:
                inside = ok(await session.call_tool("run_untrusted_scan", {
                    "targets": "192.0.2.10", "name": "in policy", "scanner_pool": "agents"}))
                held = ok(await session.call_tool("run_untrusted_scan", {
                    "targets": "192.0.2.100", "name": "needs approval", "scanner_pool": "agents"}))
                assert inside["status"] in ("queued", "running")
                assert held["status"] == "pending_approval", held
                assert "secops on-call" in held["next_step"] and "Do not submit it again" in held["next_step"]
                assert held["approval"]["required"] is True

                refused = tool_error(await session.call_tool("run_authenticated_scan", {
                    "targets": "192.0.2.11", "name": "not allowed", "ssh_username": "root", "ssh_password": "good",
                    "scanner_pool": "agents"}))
                assert refused["code"] == "policy_refused" and refused["details"]["reason"] == "scan_type_not_allowed"

                done = await follow(session, inside["task_id"], log=worker.log)
                assert done["status"] == "completed", done
                waiting = ok(await session.call_tool("get_scan_status", {"task_id": held["task_id"]}))
                assert waiting["status"] == "pending_approval"
                listed = ok(await session.call_tool("list_tasks", {"status_filter": "pending_approval"}))
                assert [t["task_id"] for t in listed["tasks"]] == [held["task_id"]], listed

                await anyio.to_thread.run_sync(approve_in_admin, held["task_id"])
                done = await follow(session, held["task_id"], log=worker.log)
                assert done["status"] == "completed", done

    try:
        anyio.run(scenario)
    finally:
        worker.cleanup()
    decided = ScanTask.objects.get(name="needs approval")
    assert decided.status == TaskStatus.COMPLETED and decided.approval_decided_by == "secops"
    assert decided.events.filter(to_status=TaskStatus.QUEUED, actor="secops").exists()
