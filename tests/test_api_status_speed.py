"""Status reads stay cheap (issue #9's throughput goal) without going wrong: the wait estimate reads its
pool in a fixed number of queries, one snapshot per pool serves every task's read for
SCANPOOL_API_WAIT_CACHE_SECONDS, and a task the snapshot does not know, or a cancel, retry or approval made in
the process (API or admin), is seen at once. Real SQLite database and the real views; nothing mocked."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.capacity import forget_pool
from tasks.models import ScanTask, TaskStatus

pytestmark = pytest.mark.django_db

URL = "/api/v1/scans/"


def submit(api, name: str) -> str:
    response = api.post(URL, {"name": name, "targets": ["192.0.2.10"], "scanner_pool": "dmz"}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def status(api, task_id: str, **params) -> tuple[dict, int]:
    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"{URL}{task_id}/", params)
    assert response.status_code == 200, response.content
    return response.json(), len(queries.captured_queries)


def fill(pool, n: int) -> None:
    """``n`` waiting tasks, one every second, the oldest an hour ago (older than anything submitted later)."""
    from tests.factories import ScanTaskFactory

    start = timezone.now() - timezone.timedelta(hours=1)
    for i in range(n):
        ScanTaskFactory(pool=pool, created_at=start + timezone.timedelta(seconds=i))


@pytest.mark.parametrize("ahead", [2, 40])
def test_status_queries_do_not_grow_with_the_queue(api, pool, settings, ahead):
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 0  # every read computes its estimate afresh
    fill(pool, ahead)
    task_id = submit(api, "last")
    status(api, task_id)  # the first read writes last_accessed_at; the next ones do not
    data, count = status(api, task_id)
    assert data["queue_position"] == ahead and data["estimated_wait_basis"]["position"] == ahead
    # token, the user's and the group's permissions, the task (joined with pool, scanners, user, token),
    # three for the estimate (usable scanners, recent durations, slot holders with the waiting tasks), events.
    # (It was 10: the position had its own count, the slot holders and the tasks ahead a query each.)
    assert count <= 8, count
    assert status(api, task_id, events=0)[1] <= 7


def test_one_snapshot_serves_every_task_of_the_pool(api, pool, settings):
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 60
    first, second = submit(api, "first"), submit(api, "second")
    status(api, first)
    status(api, second)  # last_accessed_at written for both
    forget_pool(pool.pk)
    _, fresh = status(api, first)  # takes the snapshot
    data, cached = status(api, second)
    assert data["queue_position"] == 1
    assert cached <= fresh - 3, (fresh, cached)  # no estimate query while the snapshot is young


def test_a_new_task_and_an_api_cancel_are_seen_at_once(api, pool, settings):
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 60  # long enough that only invalidation can explain the answers
    a, b = submit(api, "a"), submit(api, "b")
    assert status(api, b)[0]["queue_position"] == 1
    c = submit(api, "c")  # not in the snapshot: its read takes a new one
    assert status(api, c)[0]["queue_position"] == 2
    assert api.post(f"{URL}{a}/cancel/", format="json").status_code == 200
    assert status(api, c)[0]["queue_position"] == 1
    assert status(api, b)[0]["queue_position"] == 0


def test_an_admin_approval_and_cancel_are_seen_at_once(api, pool, settings, admin_client):
    """The admin runs in the web processes too: its approve and cancel actions drop this process's snapshot as the
    API's do (a task kept its old position for SCANPOOL_API_WAIT_CACHE_SECONDS after an admin cancel ahead of it)."""
    from django.urls import reverse

    from tests.factories import ScanTaskFactory

    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 60
    held = ScanTaskFactory(pool=pool, status=TaskStatus.PENDING_APPROVAL, approval_reason="policy",
                           created_at=timezone.now() - timezone.timedelta(minutes=5))
    b = submit(api, "b")
    assert status(api, b)[0]["queue_position"] == 0  # the scan pending approval is not in the queue

    def act(action: str) -> None:
        response = admin_client.post(reverse("admin:tasks_scantask_changelist"),
                                     {"action": action, "_selected_action": [str(held.pk)]})
        assert response.status_code == 302, response.content

    act("approve_tasks")
    assert ScanTask.objects.get(pk=held.pk).status == TaskStatus.QUEUED
    assert status(api, b)[0]["queue_position"] == 1  # it joined at its original place, ahead of b
    act("cancel_tasks")
    assert ScanTask.objects.get(pk=held.pk).status == TaskStatus.CANCELLED
    assert status(api, b)[0]["queue_position"] == 0


def test_changes_made_elsewhere_are_seen_within_the_max_age(api, pool, settings):
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 0.3
    a, b = submit(api, "a"), submit(api, "b")
    assert status(api, b)[0]["queue_position"] == 1
    # A worker claims a (another process: this one's snapshot is not told).
    ScanTask.objects.filter(pk=a).update(claimed_at=timezone.now(), assigned_scanner=pool.scanners.first())
    time.sleep(0.4)
    data = status(api, b)[0]
    assert data["queue_position"] == 0 and data["estimated_wait_basis"]["position"] == 0
    # a's own read is always current: its row says claimed, so it is no longer waiting
    mine = status(api, a)[0]
    assert mine["status"] == TaskStatus.QUEUED and mine["queue_position"] == 0
    assert mine["estimated_wait_basis"]["method"] == "not waiting"


def test_fresh_when_the_cache_is_off(api, pool, settings):
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 0
    a, b = submit(api, "a"), submit(api, "b")
    assert status(api, b)[0]["queue_position"] == 1
    ScanTask.objects.filter(pk=a).update(status=TaskStatus.CANCELLED)
    assert status(api, b)[0]["queue_position"] == 0


def test_a_requeued_task_missing_from_the_snapshot_refreshes_it(api, pool, settings):
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 60
    a, b = submit(api, "a"), submit(api, "b")
    ScanTask.objects.filter(pk=a).update(claimed_at=timezone.now())  # a worker claimed a …
    forget_pool(pool.pk)
    assert status(api, b)[0]["queue_position"] == 0  # snapshot: only b waits
    ScanTask.objects.filter(pk=a).update(claimed_at=None)  # … and put it back (older than b: not "just submitted")
    assert status(api, a)[0]["queue_position"] == 0
    assert status(api, b)[0]["queue_position"] == 1  # the snapshot a's read took


def test_submit_joins_a_young_snapshot_without_reading_the_pool(api, pool, settings):
    def submit_queries() -> tuple[dict, int]:
        with CaptureQueriesContext(connection) as queries:
            response = api.post(URL, {"name": "n", "targets": ["192.0.2.10"], "scanner_pool": "dmz"}, format="json")
        assert response.status_code == 202, response.content
        return response.json(), len(queries.captured_queries)

    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 0
    submit(api, "warm-up")  # the token's last use is written once
    data, fresh = submit_queries()
    assert data["queue_position"] == 1
    settings.SCANPOOL_API_WAIT_CACHE_SECONDS = 60
    submit_queries()  # takes the snapshot
    data, joined = submit_queries()
    assert data["queue_position"] == 3 and data["estimated_wait_basis"]["position"] == 3
    assert joined <= fresh - 3, (fresh, joined)
    assert status(api, data["task_id"])[0]["queue_position"] == 3


def test_a_status_read_shows_what_the_whole_rows_show_and_never_reads_credentials(api, pool, settings):
    """The status read loads only the columns it shows (tasks.api.views.scans.DETAIL_COLUMNS) and builds the
    events without a serializer per row: its answer equals the serializers' answer on the whole rows."""
    from rest_framework.renderers import JSONRenderer
    from rest_framework.test import APIRequestFactory

    from tasks.api.serializers import EventSerializer, ScanDetailSerializer
    from tasks.engine.transitions import add_event
    from tasks.models import EventKind

    task_id = submit(api, "whole")
    scanner = pool.scanners.first()
    ScanTask.objects.filter(pk=task_id).update(status=TaskStatus.RUNNING, assigned_scanner=scanner, progress=40,
                                               claimed_at=timezone.now(), started_at=timezone.now(),
                                               warnings=["w"], results_summary={"hosts": 1})
    add_event(task_id, "running, 40%", kind=EventKind.PROGRESS, data={"progress": 40})
    status(api, task_id)  # last_accessed_at written once
    with CaptureQueriesContext(connection) as queries:
        shown = api.get(f"{URL}{task_id}/").json()
    task_sql = [q["sql"] for q in queries.captured_queries if 'FROM "tasks_scantask"' in q["sql"]]
    assert task_sql and not any("credentials" in sql for sql in task_sql)
    assert not any('"auth_user"."password"' in sql for sql in task_sql)  # of the submitter: name only

    whole = ScanTask.objects.select_related("pool", "assigned_scanner", "requested_scanner", "requested_by",
                                            "api_token").get(pk=task_id)
    request = APIRequestFactory().get(f"{URL}{task_id}/")
    expected = ScanDetailSerializer(whole, context={"request": request, "events": True}).data
    expected = {**expected, "events": EventSerializer(whole.events.all(), many=True).data}
    assert shown == json.loads(JSONRenderer().render(expected))
    assert [e["message"] for e in shown["events"]][-1] == "running, 40%"
    assert shown["scanner_instance"] == scanner.name and shown["scanner_url"] == scanner.url



def test_serializers_built_from_prebuilt_fields_share_no_state():
    """PrebuiltFields copies fields shallowly: every serializer binds its own copies, errors do not leak from
    one serializer into another's, and the class's prototypes stay unbound. (Request serializers share bound
    fields instead: tests/test_api_submit_speed.py.)"""
    from tasks.api.serializers import EventSerializer

    bad = EventSerializer(data={"kind": "nonsense", "message": 5})
    good = EventSerializer(data={"kind": "status", "message": "ok", "actor": "a"})
    assert not bad.is_valid() and good.is_valid(), good.errors
    assert set(bad.errors) == {"kind"} and good.errors == {}
    assert good.validated_data == {"kind": "status", "message": "ok", "actor": "a"}
    assert bad.fields["kind"] is not good.fields["kind"]
    assert bad.fields["kind"].parent is bad and good.fields["kind"].parent is good
    assert all(getattr(f, "parent", None) is None for f in EventSerializer._prebuilt_fields.values())
