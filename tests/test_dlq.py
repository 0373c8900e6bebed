"""``manage.py dlq`` end to end: a task poisoned by an emulator fault fails, is listed, shown, retried after the
fault is removed, and completes; purge asks first and aborts on "no"."""

from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from scanners.models import Health, Scanner
from tasks.models import ScanTask, TaskStatus
from tasks.queues import pool_launch_queue
from tasks.services import submit
from tests.engine_support import emulated_pool, run_until
from tests.factories import ScanTaskFactory
from tests.ops_support import scrape, series

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def dlq(*args: str) -> str:
    out = StringIO()
    call_command("dlq", *args, stdout=out)
    return out.getvalue()


def poisoned_task(emu, pool, name: str) -> ScanTask:
    emu.control(0).set_faults(error_status=403, error_burst=1000)  # the scanner forbids everything
    task = submit(pool=pool.name, name=name, targets=["192.0.2.10"])
    run_until([pool], lambda: ScanTask.objects.get(pk=task.pk).status == TaskStatus.FAILED, timeout=30)
    return ScanTask.objects.get(pk=task.pk)


def test_poisoned_task_is_listed_shown_retried_and_completes(emulator, redis_conn, client, settings):
    pool, (scanner,) = emulated_pool(emulator, [1], scope=["192.0.2.0/24"])
    task = poisoned_task(emulator, pool, "poisoned")
    assert "403" in task.error_message
    # A launch that failed for good is a dead letter on the pool's launch queue (where launches run).
    assert pool_launch_queue(pool).failed_job_registry.get_job_ids() == [str(task.pk)]

    listed = json.loads(dlq("list", "--json"))
    assert [entry["task_id"] for entry in listed] == [str(task.pk)]
    assert listed[0]["pool"] == pool.name and listed[0]["status"] == "failed" and listed[0]["job_ids"]
    assert str(task.pk) in dlq("list", "--pool", pool.name)
    assert series(scrape(client, settings), "nessus_pool_dlq_depth")[(("pool", pool.name),)] == 1

    shown = dlq("show", "--task", str(task.pk))
    assert "403" in shown and "Traceback" in shown  # the error and the failed job's traceback
    assert "queued → failed: " in shown.split("timeline:")[1]
    doc = json.loads(dlq("show", "--task", str(task.pk), "--json"))
    assert doc["jobs"][0]["function"] == "tasks.jobs.launch" and "PermanentScannerError" in doc["jobs"][0]["traceback"]
    assert any(e["to"] == "failed" for e in doc["events"])
    stats = json.loads(dlq("stats", "--json"))
    assert stats == [{**stats[0], "pool": pool.name, "dead_letters": 1, "failed_jobs": 1}]

    assert "would retry" in dlq("retry", "--task", str(task.pk), "--dry-run")
    assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.FAILED

    emulator.control(0).set_faults(error_burst=0)  # the fault is gone
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    assert "retried (attempt 2)" in dlq("retry", "--task", str(task.pk))
    run_until([pool], lambda: ScanTask.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=40)
    task.refresh_from_db()
    assert task.attempts == 2 and task.status == TaskStatus.COMPLETED
    assert json.loads(dlq("list", "--json")) == []
    assert pool_launch_queue(pool).failed_job_registry.get_job_ids() == []
    assert any("dlq retry" in e.actor for e in task.events.all())


def test_purge_asks_and_aborts_on_no_then_deletes_with_yes(emulator, redis_conn, monkeypatch):
    pool, _ = emulated_pool(emulator, [1], scope=["192.0.2.0/24"])
    task = poisoned_task(emulator, pool, "to-purge")
    registry = pool_launch_queue(pool).failed_job_registry
    with pytest.raises(CommandError, match="purge: name one dead letter"):
        dlq("purge")
    prompts = []
    monkeypatch.setattr("tasks.management.commands.dlq.interactive", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "no")
    with pytest.raises(CommandError, match="aborted"):
        dlq("purge", "--all")
    assert prompts and "Delete 1 failed job(s)" in prompts[0]
    assert registry.get_job_ids() == [str(task.pk)]  # nothing deleted
    assert "would delete 1" in dlq("purge", "--all", "--dry-run")
    assert registry.get_job_ids() == [str(task.pk)]
    assert "deleted 1 failed job(s)" in dlq("purge", "--all", "--yes")
    assert registry.get_job_ids() == []
    assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.FAILED  # the row stays (cleanup_tasks expires it)
    assert json.loads(dlq("list", "--json")) == []
    assert [e["task_id"] for e in json.loads(dlq("list", "--all", "--json"))] == [str(task.pk)]


def test_what_cron_sees_unknown_task_no_terminal_redis_down(db, redis_conn, monkeypatch, settings, capfd):
    """A run that did nothing it was asked to must exit non-zero with one line, never 'no dead letters' and 0, and
    never a traceback."""
    with pytest.raises(CommandError, match="no dead letter for task"):
        dlq("retry", "--task", str(uuid.uuid4()))
    task = ScanTaskFactory(status=TaskStatus.FAILED)
    queue = pool_launch_queue(task.pool)
    queue.failed_job_registry.add(queue.enqueue_call("tasks.jobs.launch", args=(str(task.pk),), job_id=str(task.pk)),
                                  ttl=3600)
    assert str(task.pk) in dlq("list")

    capfd.readouterr()
    with pytest.raises(CommandError, match="no terminal to confirm on: add --yes"):
        dlq("purge", "--all")  # stdin is no terminal here, as under cron
    assert "[y/N]" not in capfd.readouterr().out  # no question cron would mail with the error
    assert queue.failed_job_registry.get_job_ids() == [str(task.pk)]
    settings.REDIS_URL = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens there
    with pytest.raises(CommandError, match="cannot read the dead letters: Redis at") as info:
        dlq("list")
    assert "hunter2" not in str(info.value)


def test_bad_arguments_name_the_fix(db, redis_conn):
    with pytest.raises(CommandError, match="--task 'x' is not a task id"):
        dlq("list", "--task", "x")
    with pytest.raises(CommandError, match="--pool 'nope': no such pool"):
        dlq("list", "--pool", "nope")
    with pytest.raises(CommandError, match="show: give the dead letter's task id"):
        dlq("show")


def test_list_cuts_a_long_error_visibly(db, redis_conn):
    """The list line held the first 100 characters of the error, cut mid-word with a trailing space, and nothing
    said there was more (`dlq show --task ID` has it whole)."""
    long = ("scanner emulator-2 lost scan 8: scan 8 does not exist on scanner https://127.0.0.1:18835 (HTTP 404) "
            "while trying to read scan 8")
    task = ScanTaskFactory(status=TaskStatus.FAILED, error_kind="permanent", error_message=long)
    queue = pool_launch_queue(task.pool)
    queue.failed_job_registry.add(queue.enqueue_call("tasks.jobs.launch", args=(str(task.pk),), job_id=str(task.pk)),
                                  ttl=3600)
    (line,) = [line for line in dlq("list").splitlines() if str(task.pk) in line]
    assert line.endswith("(HTTP 404)…") and long[:90] in line
