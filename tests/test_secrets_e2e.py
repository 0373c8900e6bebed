"""Secrets end to end: an authenticated_privileged scan submitted through ``tasks.services.submit``, driven to
completion by real RQ workers (in-process ``SimpleWorker`` and a ``manage.py scanworker`` subprocess) against the
Nessus emulator over HTTP. Afterwards no secret may be found in the logs, anywhere in Redis, in the task's rows
(events, error messages, results), on the admin pages, in ``export_scanners`` or in reprs.

The SSH password of the emulator's success scenario must be ``good`` (DESIGN §9), which is too common a word to
search for; the password-login task therefore looks for the *shapes* a leaked password takes (``'password':
'good'``, ``"password": "good"``, ``password=good``) and its distinctive escalation password and user name.
"""

from __future__ import annotations

import html
import json
import logging
import re
import zlib

import pytest
from django.core.management import call_command
from django.urls import reverse

from scanners.adapters.base import ScanSpec
from scanners.models import Scanner
from tasks.models import Finding, ResultHost, ScanTask, TaskEvent
from tasks.queues import get_connection
from tasks.results.storage import results_path
from tasks.services import submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import run_until
from tests.factories import PoolFactory, ScannerFactory
from tests.helpers import wait_for
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration]

# Scanner credentials (the emulator is started with them) and scan credentials: all distinctive.
SCANNER_USER = "svc-scanpool-e2e"
SCANNER_PASSWORD = "ScannerPw-7c1d9e-E2E"
ACCESS_KEY = "ace55e2e" + "7" * 56
SECRET_KEY = "5ec4e72e" + "9" * 56
KEY_MARKER = "PrivKeyBody-e2e-91f3aa"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    f"b3BlbnNzaC1rZXktdjEAAAAA{KEY_MARKER}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
ESCALATION_KEY_TASK = "EscPw-key-task-4b8e21"
ESCALATION_PW_TASK = "EscPw-pw-task-0d7f55"
REJECTED_SSH_PASSWORD = "SshPw-rejected-e2e-3a9c07"  # any password but good/noprivs: credentials rejected
SSH_USER = "ssh-user-e2e-sentinel"

SECRETS = (SCANNER_PASSWORD, ACCESS_KEY, SECRET_KEY, KEY_MARKER, ESCALATION_KEY_TASK, ESCALATION_PW_TASK,
           REJECTED_SSH_PASSWORD)
# How the SSH password "good" would look if a credentials dict or payload leaked.
GOOD_PASSWORD_SHAPES = re.compile(r"""['"]?password['"]?\s*[:=]\s*b?['"]?good\b""", re.IGNORECASE)


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}"
    match = GOOD_PASSWORD_SHAPES.search(text)
    assert match is None, f"the SSH password leaked in {where}: …{text[max(match.start() - 80, 0):match.end() + 80]}…"


def redis_dump() -> dict[str, str]:
    """Every key of the test Redis with its value as text (RQ's job ``data`` decompressed)."""
    conn = get_connection()
    out: dict[str, str] = {}
    for raw_key in conn.scan_iter("*"):
        key = raw_key.decode()
        kind = conn.type(raw_key).decode()
        if kind == "string":
            values: list[bytes] = [conn.get(raw_key) or b""]
        elif kind == "hash":
            values = [b"%s=%s" % (k, v) for k, v in conn.hgetall(raw_key).items()]
            data = conn.hget(raw_key, "data")
            if data:
                try:
                    values.append(zlib.decompress(data))
                except zlib.error:
                    pass
        elif kind == "list":
            values = conn.lrange(raw_key, 0, -1)
        elif kind == "set":
            values = list(conn.smembers(raw_key))
        elif kind == "zset":
            values = [member for member, _ in conn.zrange(raw_key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [json.dumps({k.decode(): v.decode(errors="replace") for k, v in fields.items()}).encode()
                      for _, fields in conn.xrange(raw_key)]
        else:
            values = []
        out[key] = "\n".join(v.decode(errors="replace") for v in values)
    return out


def _done(*tasks: ScanTask):
    return lambda: all(ScanTask.objects.get(pk=t.pk).is_terminal for t in tasks)


def test_no_secret_leaks_anywhere_on_a_whole_scan(transactional_db, redis_conn, emulator_factory,  # noqa: F811
                                                   caplog, admin_client, capfd):
    emu = emulator_factory(instances=2, scan_seconds=1, extra_args=[
        "--username", SCANNER_USER, "--password", SCANNER_PASSWORD,
        "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
    ])
    capfd.readouterr()  # the emulator printed its own keys at start-up: that is the emulator, not scanpool
    pool = PoolFactory(name="secrets-e2e", poll_interval_seconds=1)
    keys_scanner = ScannerFactory(pool=pool, name="e2e-apikeys", url=emu.urls[0], username="", password="",
                                  access_key=ACCESS_KEY, secret_key=SECRET_KEY, verify_tls=False)
    login_scanner = ScannerFactory(pool=pool, name="e2e-login", url=emu.urls[1], username=SCANNER_USER,
                                   password=SCANNER_PASSWORD, verify_tls=False)

    with caplog.at_level(logging.DEBUG):
        # 1. private key + sudo, on the API-keys scanner, run by an in-process SimpleWorker.
        key_task = submit(pool=pool.name, name="e2e-key", targets=["192.0.2.20"], scan_type="authenticated_privileged",
                          scanner_instance=keys_scanner.name, credentials={
                              "username": SSH_USER, "private_key": PRIVATE_KEY,
                              "elevate_privileges_with": "sudo", "escalation_password": ESCALATION_KEY_TASK})
        # ... and a distinctive SSH password the scanner rejects: the task fails, with an error message.
        rejected_task = submit(pool=pool.name, name="e2e-rejected", targets=["192.0.2.22"],
                               scan_type="authenticated", scanner_instance=keys_scanner.name,
                               credentials={"username": SSH_USER, "password": REJECTED_SSH_PASSWORD})
        run_until([pool], _done(key_task, rejected_task), timeout=60)

        # 2. password "good" + sudo, on the session-login scanner, run by a scanworker subprocess.
        pw_task = submit(pool=pool.name, name="e2e-password", targets=["192.0.2.21"],
                         scan_type="authenticated_privileged", scanner_instance=login_scanner.name, credentials={
                             "username": SSH_USER, "password": "good",
                             "elevate_privileges_with": "sudo", "escalation_password": ESCALATION_PW_TASK})
        worker = WorkerProcess([pool.name], SCANPOOL_LOG_LEVEL="DEBUG").start()
        try:
            wait_for(_done(pw_task), timeout=60)
        finally:
            worker.stop()
        worker_log = worker.log()
        worker.cleanup()

    for task in (key_task, pw_task):
        task.refresh_from_db()
        assert (task.status, task.auth_status) == ("completed", "success"), (task.status, task.error_message)
    rejected_task.refresh_from_db()
    assert (rejected_task.status, rejected_task.error_kind) == ("failed", "authentication")
    assert rejected_task.error_message
    assert key_task.credentials is None and pw_task.credentials is None  # erased when they completed
    with pytest.raises(AssertionError):  # the checks below do catch a leaked credentials dict (a failed task
        assert_clean(repr(rejected_task.credentials), "a negative control")  # keeps its own for a retry)
    # The scans really carried the credentials to the scanner (else this test would prove nothing).
    scans = {s["name"]: s for i in range(2) for s in emu.control(i).scans()}
    assert any("e2e-key" in name and s["scenario"] == "success" for name, s in scans.items()), scans
    assert any("e2e-password" in name and s["scenario"] == "success" for name, s in scans.items()), scans
    assert any("e2e-rejected" in name and s["scenario"] == "rejected" for name, s in scans.items()), scans
    assert str(pw_task.pk) in worker_log, "the worker's log was not captured"

    # Logs: this process (caplog + anything printed) and the worker subprocess.
    captured = capfd.readouterr()
    assert_clean(caplog.text, "the test process's logs")
    assert_clean(captured.out + captured.err, "the test process's stdout/stderr")
    assert_clean(worker_log, "the scanworker's output")
    # Export tokens are bearer tokens for a results download: logged masked ("/tokens/…"), never whole.
    assert "/tokens/…" in worker_log
    for text in (worker_log, caplog.text):
        assert not re.search(r"/tokens/[0-9a-f]{16,}", text), "an export token in the logs"

    # Redis: job payloads, results, registries, locks, worker keys — everything.
    dump = redis_dump()
    assert any(str(key_task.pk) in key for key in dump), "the job keys are gone: nothing was checked"
    for key, value in dump.items():
        assert_clean(f"{key}\n{value}", f"Redis key {key}")
        assert SSH_USER not in value, f"the SSH user name (part of the credentials) is in Redis key {key}"

    # Database rows people and programs read.
    for event in TaskEvent.objects.all():
        assert_clean(f"{event.kind} {event.message} {json.dumps(event.data)}", f"event {event.kind}")
    for task in (key_task, pw_task, rejected_task):
        assert_clean(" ".join([task.error_message, json.dumps(task.warnings), json.dumps(task.troubleshooting),
                               json.dumps(task.results_summary), json.dumps(task.validation)]), "task fields")
    for host in ResultHost.objects.all():
        assert_clean(json.dumps([host.properties, host.auth_evidence]), f"result host {host.name}")
    for finding in Finding.objects.all():
        assert_clean(json.dumps([finding.plugin_output, finding.data, finding.attributes]), f"finding {finding}")

    # The stored .nessus files (the export carries the policy: the scanner must mask the secrets).
    for task in (key_task, pw_task, rejected_task):
        path = results_path(task.pk)
        assert path.stat().st_size > 0
        assert_clean(path.read_text(errors="replace"), f"the stored export of {task.name}")

    # Admin pages.
    urls = [reverse("admin:scanners_scanner_changelist"), reverse("admin:tasks_scantask_changelist")]
    urls += [reverse("admin:scanners_scanner_change", args=[s.pk]) for s in (keys_scanner, login_scanner)]
    urls += [reverse("admin:tasks_scantask_change", args=[t.pk]) for t in (key_task, pw_task, rejected_task)]
    urls += [reverse("admin:tasks_finding_changelist"), reverse("admin:tasks_resulthost_changelist")]
    urls += [reverse("admin:tasks_resulthost_change", args=[h.pk]) for h in ResultHost.objects.all()]
    urls += [reverse("admin:tasks_finding_change", args=[f.pk]) for f in Finding.objects.filter(plugin_id__in=[
        19506, 141118, 110095, 117887, 104410, 110385, 102094])]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_clean(response.content.decode(), url)

    # export_scanners writes placeholders.
    out = results_path(key_task.pk).parent / "scanners.yaml"
    call_command("export_scanners", output=str(out), stderr=open("/dev/null", "w"))
    assert_clean(out.read_text(), "export_scanners")

    # Reprs and strs of the models and of the adapter's scan spec.
    for obj in (*Scanner.objects.all(), *ScanTask.objects.all(), *TaskEvent.objects.all()):
        assert_clean(repr(obj) + str(obj), f"repr of {obj.__class__.__name__}")
    for task in (key_task, pw_task, rejected_task):
        spec = ScanSpec(task_id=task.pk, name=task.name, targets=task.targets, scan_type=task.scan_type,
                        credentials=task.credentials)
        assert_clean(repr(spec) + str(spec), "ScanSpec")


@pytest.mark.django_db
def test_error_reports_of_a_failed_submission_hide_the_credentials():
    """Django's error reports (500 pages, error mails) show each frame's local variables; the submission
    service's frames must hide the credentials (``sensitive_variables``)."""
    import sys

    from django.views.debug import ExceptionReporter

    from tasks.errors import SubmissionError

    pool = PoolFactory(name="secrets-report")
    secret_key_text = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_MARKER}\n-----END OPENSSH PRIVATE KEY-----\n"
    try:
        submit(pool=pool.name, name="x", targets=["192.0.2.30"], scan_type="authenticated_privileged",
               credentials={"username": SSH_USER, "private_key": secret_key_text, "elevate_privileges_with": "nope",
                            "escalation_password": ESCALATION_KEY_TASK})
    except SubmissionError:
        exc_info = sys.exc_info()
    else:
        pytest.fail("an unknown escalation method was accepted")
    reporter = ExceptionReporter(None, *exc_info)
    frames = [f for f in reporter.get_traceback_frames() if "/tests/" not in f["filename"]]  # not this test's own
    assert {"submit", "_submit", "clean_credentials"} <= {frame["function"] for frame in frames}
    for frame in frames:
        text = html.unescape(repr(list(frame["vars"])))
        assert_clean(text, f"the local variables of {frame['function']} in an error report")
