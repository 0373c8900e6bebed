"""The writer thread of ingest (tasks/results/writer.py): batches are written on a thread with its own connection
while the file is parsed, results stay invisible until the final commit, and any failure leaves nothing behind."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from tasks.models import Finding, ResultHost, ScanTask, ScanType, TaskStatus
from tasks.results import ingest as ingest_module
from tasks.results.ingest import ingest_results
from tasks.results.parser import NessusParseError
from tasks.results.query import get_page
from tasks.results.writer import BatchWriter
from tests.factories import ScanTaskFactory
from tests.results_support import host, item, nessus, write


def _task():
    return ScanTaskFactory(scan_type=ScanType.UNTRUSTED, targets=["192.0.2.0/24"], status=TaskStatus.RUNNING)


def _export(tmp_path, hosts: int = 12, items_per_host: int = 5, name: str = "scan.nessus"):
    blocks = [
        host(f"192.0.2.{h + 1}", *(item(10000 + i, f"output {h}/{i}", severity=i % 5, port=i) for i in
                                   range(items_per_host)), props={"host-ip": f"192.0.2.{h + 1}"})
        for h in range(hosts)
    ]
    return write(tmp_path, nessus(*blocks), name)


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "results-writer"]


def _watch_flushes(monkeypatch, look=None):
    """Record on which thread each batch is written; ``look(batch)`` runs right after its commit."""
    threads: list[str] = []
    real_flush = ingest_module._Loader.flush

    def flush(self, batch):
        threads.append(threading.current_thread().name)
        real_flush(self, batch)
        if look is not None:
            look(batch)

    monkeypatch.setattr(ingest_module._Loader, "flush", flush)
    return threads


@pytest.mark.django_db(transaction=True)  # a worker's ingest: no caller transaction, so the writer thread is used
def test_batches_are_written_on_the_writer_thread_and_invisible_until_the_final_commit(monkeypatch, tmp_path):
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 10)
    task = _task()
    seen: list[tuple[int, int, dict]] = []

    def look(batch):  # on the writer's own connection, right after the batch's commit
        seen.append((Finding.objects.filter(task=task).count(), get_page(task.id).total,
                     ScanTask.objects.get(pk=task.pk).results_summary))

    threads = _watch_flushes(monkeypatch, look)
    outcome = ingest_results(task.id, _export(tmp_path))
    assert outcome.hosts == 12 and outcome.findings == 60
    assert set(threads) == {"results-writer"} and len(threads) >= 6
    committed = [c for c, _, _ in seen]
    assert committed == sorted(committed) and committed[0] > 0 and committed[-1] == 60
    assert {(page, bool(summary)) for _, page, summary in seen} == {(0, False)}  # committed, yet not served
    assert get_page(task.id).total == 60  # served after the final commit
    assert not _writer_threads()
    for row in ResultHost.objects.filter(task=task):  # host ids resolved on the writer's side
        assert row.findings.count() == row.findings_count == 5


@pytest.mark.django_db
def test_inside_a_callers_transaction_batches_are_written_inline(monkeypatch, tmp_path):
    """Another connection could neither see the caller's uncommitted task nor join its transaction."""
    threads = _watch_flushes(monkeypatch)
    task = _task()
    ingest_results(task.id, _export(tmp_path))
    assert threads and set(threads) == {threading.current_thread().name}


@pytest.mark.django_db(transaction=True)
def test_a_failure_on_the_writer_thread_is_raised_as_itself_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 10)
    task = _task()
    ingest_results(task.id, _export(tmp_path, hosts=2, name="old.nessus"))  # previous results, to be replaced
    raised: list[BaseException] = []
    real_insert = ingest_module.insert_rows
    calls = []

    def failing_insert(rows):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            error = RuntimeError("disk full while writing batch 3")
            raised.append(error)
            raise error
        return real_insert(rows)

    monkeypatch.setattr(ingest_module, "insert_rows", failing_insert)
    with pytest.raises(RuntimeError, match="disk full") as info:
        ingest_results(task.id, _export(tmp_path))
    assert info.value is raised[0]  # the writer's own exception, not a wrapper
    assert set(calls) == {"results-writer"} and len(calls) == 3  # nothing written after the failure
    assert not _writer_threads()  # joined before the clean-up ran
    assert Finding.objects.filter(task=task).count() == 0 and ResultHost.objects.filter(task=task).count() == 0
    task.refresh_from_db()
    assert task.results_summary == {} and get_page(task.id).total == 0


@pytest.mark.django_db(transaction=True)
def test_a_bad_file_stops_the_writer_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 10)
    task = _task()
    text = nessus(*(host(f"192.0.2.{h + 1}", *(item(10000 + i, "x" * 50) for i in range(5))) for h in range(40)))
    path = write(tmp_path, text[: len(text) * 3 // 4])  # cut short after ~30 hosts
    threads = _watch_flushes(monkeypatch)
    with pytest.raises(NessusParseError):
        ingest_results(task.id, path)
    assert threads and set(threads) == {"results-writer"}  # batches were written before the cut…
    assert not _writer_threads()
    assert Finding.objects.filter(task=task).count() == 0 and ResultHost.objects.filter(task=task).count() == 0
    task.refresh_from_db()
    assert task.results_summary == {}  # …and removed, never served


def test_batch_writer_bounds_the_queue_and_stops_on_the_callers_error():
    """Unit test of the hand-over, no database: at most ``depth`` batches wait; a caller's error drops them."""
    release = threading.Event()
    written: list[int] = []

    def write(batch: int) -> None:
        release.wait(5)
        written.append(batch)

    writer = BatchWriter(write, _no_session, threaded=True, depth=1)
    with pytest.raises(ValueError, match="bad file"), writer:
        writer.put(1)  # taken by the writer, which waits
        deadline = time.monotonic() + 5
        while writer._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.put(2)  # waits in the queue
        blocked = threading.Thread(target=writer.put, args=(3,))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()  # the queue is full: the parser waits instead of piling up batches
        release.set()
        blocked.join(5)
        raise ValueError("bad file")
    assert written[0] == 1 and len(written) <= 3
    assert not writer._thread.is_alive()


def test_batch_writer_inline_writes_in_the_callers_thread():
    names: list[str] = []
    with BatchWriter(lambda batch: names.append(threading.current_thread().name), _no_session,
                     threaded=False) as writer:
        writer.put(1)
    assert names == [threading.current_thread().name]


def _no_session():
    from contextlib import nullcontext

    return nullcontext()


@pytest.mark.django_db(transaction=True)
def test_postgresql_writer_connection_is_closed_with_its_thread(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL sessions")
    task = _task()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        before = cursor.fetchone()[0]
    outcome = ingest_results(task.id, _export(tmp_path))
    assert outcome.findings == 60
    with connection.cursor() as cursor:  # the writer's connection is gone with its thread
        for _ in range(50):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            if cursor.fetchone()[0] <= before:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the writer thread's connection was left open")
