"""The ops commands under cron (real ``manage.py`` processes, their stdout and stderr as cron mails them): a run
that did nothing prints nothing with ``-v 0`` and at most one summary line by default; a line is printed once
(never again as a log line on stderr); errors go to stderr, one line each, no traceback, exit status 1."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from scanners import pacing
from scanners.models import Health, Scanner
from tasks.models import ScanTask, TaskStatus
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.factories import PoolFactory, ScanTaskFactory
from tests.worker_process import ROOT, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=worker_env(**env),
                          capture_output=True, text=True, timeout=120)


def silent(proc: subprocess.CompletedProcess) -> bool:
    return (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def one_line(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 0 and proc.stderr == "" and len(proc.stdout.splitlines()) == 1


def test_reconcile_prints_what_it_did_once_and_nothing_when_nothing_happened(emulator, redis_conn):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1], scope=["192.0.2.0/24"])
    first = manage("reconcile")  # the scanner's first health check: unknown -> ready
    assert first.returncode == 0, first.stderr
    assert f"health of {scanner.name}: unknown -> ready" in first.stdout
    assert first.stderr == "", "the report again as log lines on stderr"
    assert len(first.stdout.splitlines()) == len(set(first.stdout.splitlines()))

    quiet = manage("reconcile", "-v", "0")
    assert silent(quiet), (quiet.stdout, quiet.stderr)
    default = manage("reconcile")
    assert one_line(default), (default.stdout, default.stderr)
    assert pool.name in default.stdout


def test_reconcile_errors_go_to_stderr_once_without_a_traceback_and_exit_1(redis_conn):
    PoolFactory(name="cron-err")
    for verbosity in ("0", "1"):
        proc = manage("reconcile", "--no-scanners", "-v", verbosity, REDIS_URL="redis://127.0.0.1:1/0")
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if "cron-err" in line]
        assert len(errors) == 1, proc.stderr
        assert proc.stderr.splitlines()[-1].startswith("CommandError: ")
        assert "cron-err:" not in proc.stdout  # the error line itself is on stderr only


def test_cleanup_tasks_that_deleted_nothing_is_silent_or_one_line(redis_conn):
    PoolFactory(name="tidy")
    assert silent(quiet := manage("cleanup_tasks", "-v", "0")), (quiet.stdout, quiet.stderr)
    assert one_line(default := manage("cleanup_tasks")), (default.stdout, default.stderr)
    assert one_line(manage("cleanup_tasks", "--dry-run"))


def test_cleanup_tasks_that_deleted_says_so_once(redis_conn):
    pool = PoolFactory(name="tidy2")
    task = ScanTaskFactory(pool=pool, status=TaskStatus.COMPLETED)
    ten_days = timezone.now() - timedelta(days=10)
    ScanTask.objects.filter(pk=task.pk).update(finished_at=ten_days, updated_at=ten_days)
    proc = manage("cleanup_tasks")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "deleted 1 completed task(s)" in proc.stdout
    assert "failed task" not in proc.stdout  # statuses with nothing deleted are not listed one by one
    assert not ScanTask.objects.filter(pk=task.pk).exists()


def test_dlq_with_no_dead_letters_is_silent_or_one_line(redis_conn):
    PoolFactory(name="letters-a")
    # A failed task whose failed job is gone (retried from RQ, purged, or expired) is not a dead letter: `dlq list
    # --all` shows it, but a cron run of `dlq stats -v 0` must not mail it every day.
    ScanTaskFactory(pool=PoolFactory(name="letters-b"), status=TaskStatus.FAILED)
    for args in (["list"], ["stats"], ["retry", "--all"], ["purge", "--all"]):
        assert silent(quiet := manage("dlq", *args, "-v", "0")), (args, quiet.stdout, quiet.stderr)
        assert one_line(default := manage("dlq", *args)), (args, default.stdout, default.stderr)


def test_check_scanners_all_ready_is_silent_at_v0_and_never_logs_its_table_again(emulator):  # noqa: F811
    _, (scanner,) = emulated_pool(emulator, [1])
    assert silent(quiet := manage("check_scanners", "-v", "0")), (quiet.stdout, quiet.stderr)
    default = manage("check_scanners")
    assert default.returncode == 0 and default.stderr == "", default.stderr  # no log lines next to the table
    assert "1/1 scanners ready" in default.stdout

    emulator.control(0).set_faults(unlicensed=True)
    try:
        proc = manage("check_scanners", "-v", "0")
    finally:
        emulator.control(0).set_faults(unlicensed=False)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]] and scanner.name in proc.stderr
    assert proc.stderr.startswith("CommandError: not ready: ")


def test_reconcile_at_v0_does_not_mail_about_a_scanner_that_asked_to_wait(emulator, redis_conn):  # noqa: F811
    """A Retry-After wait is the scanner's own request and ends by itself: nothing for cron to mail (-v 0); the
    default output names it (one note) and counts it in the summary. The scanner is not called either way."""
    pool, (scanner,) = emulated_pool(emulator, [1], scope=["192.0.2.0/24"])
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    until = pacing.record_wait(scanner, 300)

    quiet = manage("reconcile", "-v", "0")
    assert silent(quiet), (quiet.stdout, quiet.stderr)
    default = manage("reconcile")
    assert default.returncode == 0 and default.stderr == "", default.stderr
    assert default.stdout.splitlines() == [
        f"pools: {pool.name}; queued tasks: 0; 1 scanner(s) waiting (Retry-After)",
        f"scanner {scanner.name} not checked: it asked scanpool to wait until {until:%H:%M:%S} UTC (Retry-After)",
    ]
    assert emulator.control(0).stats()["recent"] == []
