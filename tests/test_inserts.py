"""scanpool_site.inserts.insert_new writes the same rows as the ORM (the submission path uses it for its three
rows): every column, defaults and ``auto_now_add`` included, JSON as JSON, credentials encrypted at rest. What it
cannot do by its cached statement (an expression, an id chosen for an auto-increment key) goes through
``bulk_create``. Runs on SQLite and PostgreSQL (both test lanes)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from scanpool_site.inserts import insert_new
from tasks.models import ApiToken, EventKind, ScanTask, TaskEvent, TaskStatus, TaskTarget
from tests.factories import PoolFactory, ScannerFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cret-Passw0rd!"
# Written by the database or by the clock, not given: the two rows differ there by design.
GENERATED = {"id", "trace_id", "created_at", "updated_at"}


def _columns(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields if f.name not in GENERATED}


def _task_fields(pool, scanner, user, token) -> dict:
    return dict(pool=pool, name="same", description="a description", targets=["192.0.2.10", "192.0.2.0/28"],
                scan_type="authenticated", credentials={"username": "scan", "password": SECRET},
                requested_scanner=scanner, timeout_seconds=1800, idempotency_key="api:1:k",
                request_fingerprint="f" * 64, requested_by=user, requested_via="api", api_token=token,
                address_count=17, status=TaskStatus.QUEUED)


def test_a_task_written_by_insert_new_is_the_row_the_orm_writes():
    pool = PoolFactory(name="dmz")
    scanner = ScannerFactory(pool=pool, name="n1")
    user = get_user_model().objects.create_user("alice")
    token, _ = ApiToken.issue(user, "agent")
    by_orm = ScanTask.objects.create(**_task_fields(pool, scanner, user, token))
    fields = _task_fields(pool, scanner, user, token)
    fields["idempotency_key"] = "api:1:other"  # unique
    before = timezone.now()
    with transaction.atomic():
        task = ScanTask(**fields)
        insert_new([task])
    assert not task._state.adding and task._state.db == "default"
    assert before <= task.created_at <= timezone.now()  # auto_now_add ran, on the object too

    orm_row, new_row = ScanTask.objects.get(pk=by_orm.pk), ScanTask.objects.get(pk=task.pk)
    assert new_row.trace_id == task.trace_id and new_row.created_at == task.created_at
    want, got = _columns(orm_row), _columns(new_row)
    assert want.pop("idempotency_key") == "api:1:k" and got.pop("idempotency_key") == "api:1:other"
    assert got == want
    assert new_row.credentials == {"username": "scan", "password": SECRET}
    with connection.cursor() as cursor:  # at rest: ciphertext, as the ORM writes it
        cursor.execute("SELECT credentials FROM tasks_scantask WHERE id = %s", [task.pk.hex if
                       connection.vendor == "sqlite" else task.pk])
        (stored,) = cursor.fetchone()
    assert SECRET not in str(stored)

    new_row.name = "renamed"  # a written object is an ordinary row afterwards
    new_row.save(update_fields=["name"])
    assert ScanTask.objects.get(pk=task.pk).name == "renamed"


def test_target_rows_and_events_are_the_rows_the_orm_writes():
    task = ScanTask.objects.create(pool=PoolFactory(), name="t", targets=["192.0.2.10"], timeout_seconds=60)
    rows = [TaskTarget(task_id=task.pk, first="4:c000020a", last="4:c000020a"), TaskTarget(task_id=task.pk,
                                                                                         hostname="db.example.com")]
    with transaction.atomic():
        insert_new(rows)
        insert_new([TaskEvent(task_id=task.pk, kind=EventKind.STATUS, message="submitted to pool p", actor="a via api",
                              data={"targets": 2, "scan_type": "untrusted"})])
    TaskEvent.objects.create(task_id=task.pk, kind=EventKind.STATUS, message="submitted to pool p", actor="a via api",
                             data={"targets": 2, "scan_type": "untrusted"})
    assert sorted((t.first, t.last, t.hostname) for t in task.target_index.all()) == [
        ("", "", "db.example.com"), ("4:c000020a", "4:c000020a", "")]
    new, orm = TaskEvent.objects.filter(task_id=task.pk).order_by("id")
    assert _columns(new) == _columns(orm)
    assert new.data == {"targets": 2, "scan_type": "untrusted"}  # JSON, not its text
    assert TaskEvent.objects.filter(task_id=task.pk, data__scan_type="untrusted").count() == 2


def test_what_the_cached_statement_cannot_write_goes_through_the_orm():
    task = ScanTask.objects.create(pool=PoolFactory(), name="t", targets=["192.0.2.10"], timeout_seconds=60)
    chosen = TaskEvent(id=987654, task_id=task.pk, message="with its own id", actor="x")
    insert_new([chosen])
    assert TaskEvent.objects.get(pk=987654).message == "with its own id"
    insert_new([TaskEvent(task_id=task.pk, message="timed by the database", actor="x", created_at=Now())])
    assert TaskEvent.objects.get(message="timed by the database").created_at is not None
    with pytest.raises(TypeError, match="one model"):
        insert_new([TaskEvent(task_id=task.pk, message="m"), TaskTarget(task_id=task.pk, hostname="h")])
    insert_new([])  # nothing to write, no statement


def test_a_refused_row_raises_the_databases_error_and_writes_nothing():
    pool = PoolFactory()
    ScanTask.objects.create(pool=pool, name="t", targets=["192.0.2.10"], timeout_seconds=60, idempotency_key="k")
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_new([ScanTask(pool=pool, name="again", targets=["192.0.2.10"], timeout_seconds=60,
                             idempotency_key="k")])
    assert not ScanTask.objects.filter(name="again").exists()


def test_many_rows_are_written_in_statements_under_the_parameter_limit():
    task = ScanTask.objects.create(pool=PoolFactory(), name="t", targets=["192.0.2.10"], timeout_seconds=60)
    rows = [TaskTarget(task_id=task.pk, hostname=f"h{i}.example.com") for i in range(1001)]
    with transaction.atomic():
        insert_new(rows)
    assert task.target_index.count() == 1001
    assert set(task.target_index.values_list("hostname", flat=True)) == {f"h{i}.example.com" for i in range(1001)}
