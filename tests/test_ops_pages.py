"""Staff pages: the RQ view (/ops/queues/, replaces django-rq's dashboard) and the live dashboard's access rules."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from rq import SimpleWorker

from scanners.models import Health
from tasks.engine.locks import HEARTBEAT_STALE
from tasks.models import TaskStatus
from tasks.queues import SERIALIZER, pool_queue
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory, UserFactory
from tests.ops_support import register_worker_elsewhere

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = UserFactory(username="staffer", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_scantask", "change_scantask"]))
    client.force_login(user)
    return user


def test_django_rq_dashboard_is_gone_for_staff(client, staff, redis_conn):
    # Before: any staff user could read, delete and requeue every job there (issue #8, item 4).
    assert client.get("/django-rq/").status_code == 404
    assert client.get("/admin/django_rq/dashboard/").status_code == 404


def test_queues_page_needs_superuser_or_the_permission(client, staff, redis_conn):
    assert client.get(reverse("ops-queues")).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_queues"))
    assert client.get(reverse("ops-queues")).status_code == 200
    client.logout()
    response = client.get(reverse("ops-queues"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db(transaction=True)  # the job closes old DB connections, as in a worker
def test_queues_page_shows_every_pool_and_reads_json_jobs(admin_client, redis_conn):
    pools = [PoolFactory(name=f"zone-{i}", scope=["192.0.2.0/24"]) for i in range(3)]  # created at run time
    task = ScanTaskFactory(pool=pools[1], status=TaskStatus.FAILED)
    queue = pool_queue(pools[1])
    queue.enqueue_call("tasks.jobs.launch", args=("not-a-task-id",), job_id=str(task.pk))
    SimpleWorker([queue], connection=queue.connection, serializer=SERIALIZER).work(burst=True)  # it really fails
    assert queue.failed_job_registry.get_job_ids() == [str(task.pk)]
    body = admin_client.get(reverse("ops-queues")).content.decode()
    for pool in pools:
        assert f'data-queue="scanpool-{pool.name}"' in body
    assert "ValueError: badly formed hexadecimal UUID string" in body
    assert reverse("admin:tasks_scantask_change", args=[task.pk]) in body
    assert "tasks.jobs.launch" in body and "Unpickl" not in body


def test_dashboard_is_staff_only(client, staff, redis_conn):
    assert client.get(reverse("ops-dashboard")).status_code == 200
    assert client.get(reverse("ops-dashboard-live")).status_code == 200
    client.logout()
    for name in ("ops-dashboard", "ops-dashboard-live"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(UserFactory(username="not-staff"))
    assert client.get(reverse("ops-dashboard")).status_code == 302


def test_admin_index_links_the_dashboard_and_lists_every_scanner(client, admin_client, staff, redis_conn):
    pool = PoolFactory(name="idx", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, name="idx-ok", health=Health.READY, max_concurrent_scans=3, active_scans=2)
    ScannerFactory(pool=pool, name="idx-down", health=Health.UNREACHABLE)
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("ops-dashboard") in body and reverse("ops-queues") in body
    assert 'id="control-room-scanners"' in body and "idx-ok" in body and "2/3" in body and "Unreachable" in body
    assert '<th style="white-space:nowrap;width:auto">queued</th>' in body  # the header no longer breaks per letter
    staff_body = client.get(reverse("admin:index")).content.decode()
    assert reverse("ops-dashboard") in staff_body and reverse("ops-queues") not in staff_body


def test_task_targets_and_scanner_licence_are_readable(admin_client):
    pool = PoolFactory(name="readable", scope=["192.0.2.0/24"])
    scanner = ScannerFactory(pool=pool, name="lic", license_info={
        "type": "manager", "name": "Nessus Manager", "expiration_date": 1893456000, "ips": 512, "scan_api": True})
    task = ScanTaskFactory(pool=pool, targets=["192.0.2.10", "192.0.2.0/28"])
    body = admin_client.get(reverse("admin:tasks_scantask_change", args=[task.pk])).content.decode()
    assert "2 target(s):<br><code>192.0.2.10</code><br><code>192.0.2.0/28</code>" in body
    assert "[&quot;192.0.2.10&quot;" not in body  # not the raw JSON list
    body = admin_client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    assert "edition: <b>Nessus Manager</b>" in body and "expires: <b>2030-01-01</b>" in body
    assert "licensed IPs: <b>512</b>" in body and "scan API: <b>yes</b>" in body
    assert "&quot;scan_api&quot;" not in body


def test_queues_page_tells_a_gone_worker_from_a_live_one(admin_client, redis_conn):
    """A worker's RQ registration outlives it by minutes: the page judges each worker as /readyz and the
    reconcile do (heartbeat age; a dead pid on this host) and counts only live ones for a pool."""
    pool = PoolFactory(name="remote", scope=["192.0.2.0/24"])
    register_worker_elsewhere(redis_conn, "remote-dead", pool.queue_name, heartbeat_age=HEARTBEAT_STALE + 5)
    body = admin_client.get(reverse("ops-queues")).content.decode()
    assert f"gone: no heartbeat for over {HEARTBEAT_STALE} s" in body and "rq-worker-gone" in body
    assert "No live worker" in body
    row = body.split(f'data-queue="{pool.queue_name}"')[1].split("</tr>")[0]
    assert row.rstrip().endswith("<td>0</td>")  # the pool's live workers
    register_worker_elsewhere(redis_conn, "remote-live", pool.queue_name, heartbeat_age=2)
    body = admin_client.get(reverse("ops-queues")).content.decode()
    assert "No live worker" not in body
    row = body.split(f'data-queue="{pool.queue_name}"')[1].split("</tr>")[0]
    assert row.rstrip().endswith("<td>1</td>")
    live_row = body.split("remote-live")[0].rsplit("<tr", 1)[1]
    assert "rq-worker-gone" not in live_row
