"""Issue #8 (low): scan credentials have size and character limits, with messages naming the field (never
echoing the value); a task's stored credentials are erased when it ends completed or cancelled
(failed/timeout keep them for a retry), with an event, and the task's admin page says which and why."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks.engine.transitions import transition
from tasks.errors import SubmissionError
from tasks.models import ScanTask, TaskEvent
from tasks.services import cancel, retry, submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, run_until
from tests.factories import PoolFactory, ScanTaskFactory

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
RSA_KEY = ("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\n"
           "MIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----")
PRIV = {"elevate_privileges_with": "sudo"}


@pytest.fixture
def pool(db):
    return PoolFactory(name="dmz", scope=["192.0.2.0/24"])


def _submit(creds: dict, scan_type: str = "authenticated") -> ScanTask:
    return submit(pool="dmz", name="n", targets=["192.0.2.1"], scan_type=scan_type, credentials=creds)


@pytest.mark.parametrize(("creds", "field", "words"), [
    ({"username": "u" * 257, "password": "p"}, "credentials.username", "257 characters long; at most 256"),
    ({"username": "ro\x00ot", "password": "p"}, "credentials.username", "NUL"),
    ({"username": "root\nadmin", "password": "p"}, "credentials.username", "control or non-printable"),
    ({"username": "root\x1b[2J", "password": "p"}, "credentials.username", "control or non-printable"),
    ({"username": "root", "password": "p" * 1025}, "credentials.password", "1025 characters long; at most 1024"),
    ({"username": "root", "password": "pa\x00ss"}, "credentials.password", "NUL"),
    ({"username": "root", "private_key": "hello"}, "credentials.private_key", "not a PEM or OpenSSH private key"),
    ({"username": "root", "private_key": KEY.replace("END OPENSSH", "END RSA")}, "credentials.private_key",
     "not a PEM or OpenSSH private key"),
    ({"username": "root", "private_key": "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----"},
     "credentials.private_key", "not a PEM or OpenSSH private key"),
    ({"username": "root", "private_key": KEY.replace("AAAA\n", "AA\x00AA\n")}, "credentials.private_key", "NUL"),
    ({"username": "root", "private_key": KEY.replace("AAAA\n", "A" * 17000 + "\n")}, "credentials.private_key",
     "at most 16384 bytes"),
])
def test_credential_limits_name_the_field_and_write_nothing(pool, creds, field, words):
    with pytest.raises(SubmissionError) as info:
        _submit(creds)
    err = info.value
    assert (err.field, err.status_code) == (field, 400) and words in err.message, err.message
    for value in creds.values():
        assert len(value) < 4 or value not in err.message  # the value is never echoed
    assert not ScanTask.objects.exists() and not TaskEvent.objects.exists()


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"escalation_account": "r\too"}, "credentials.escalation_account", "control or non-printable"),
    ({"escalation_account": "r" * 300}, "credentials.escalation_account", "at most 256"),
    ({"escalation_password": "x" * 2000}, "credentials.escalation_password", "at most 1024"),
    ({"escalation_password": "x\x00"}, "credentials.escalation_password", "NUL"),
    ({"elevate_privileges_with": "sudo" * 1000}, "credentials.elevate_privileges_with", "at most 256"),
])
def test_escalation_fields_have_the_same_limits(pool, extra, field, words):
    with pytest.raises(SubmissionError) as info:
        _submit({"username": "root", "password": "p", **PRIV, **extra}, "authenticated_privileged")
    assert info.value.field == field and words in info.value.message
    assert len(info.value.message) < 300


def test_values_at_the_limits_are_accepted(pool):
    task = _submit({"username": "d" * 256, "password": "ä\t" * 512, **PRIV, "escalation_account": "Administrator",
                    "escalation_password": "x" * 1024}, "authenticated_privileged")
    assert task.credentials["password"] == "ä\t" * 512
    assert _submit({"username": "Jörg Müller", "private_key": RSA_KEY}).credentials["private_key"] == RSA_KEY
    big = "-----BEGIN PRIVATE KEY-----\n" + "A" * (16384 - 54) + "\n-----END PRIVATE KEY-----"
    assert len(big.encode()) == 16384
    assert _submit({"username": "root", "private_key": big}).credentials["private_key"] == big


# ----------------------------------------------------------------------------------------- erasure


def _erased_events(task) -> list[TaskEvent]:
    return list(TaskEvent.objects.filter(task=task, message__startswith="stored scan credentials erased"))


def test_cancelled_task_has_its_credentials_erased_with_an_event(pool, admin_client):
    task = _submit({"username": "root", "password": "s3cret"})
    page = admin_client.get(reverse("admin:tasks_scantask_change", args=[task.pk])).content.decode()
    assert "stored (encrypted) while the scan is queued or running" in page and "s3cret" not in page
    cancel(task.pk, actor="alice")
    task.refresh_from_db()
    assert task.status == "cancelled" and task.credentials is None
    assert ScanTask.objects.filter(pk=task.pk, credentials__isnull=True).exists()  # the column, not only the object
    [event] = _erased_events(task)
    assert event.message == "stored scan credentials erased (task cancelled)" and event.actor == "alice"
    page = admin_client.get(reverse("admin:tasks_scantask_change", args=[task.pk])).content.decode()
    assert "erased when the task ended cancelled" in page


def test_failed_and_timed_out_tasks_keep_them_for_a_retry(db, admin_client):
    creds = {"username": "root", "password": "s3cret"}
    failed = ScanTaskFactory(scan_type="authenticated", credentials=creds)
    assert transition(failed.id, expect="queued", to="failed", message="boom")
    timed_out = ScanTaskFactory(scan_type="authenticated", credentials=creds, status="running")
    assert transition(timed_out.id, expect="running", to="timeout")
    for task in (failed, timed_out):
        task.refresh_from_db()
        assert task.credentials == creds and not _erased_events(task)
    page = admin_client.get(reverse("admin:tasks_scantask_change", args=[failed.pk])).content.decode()
    assert "kept because the task failed and a retry reuses them" in page
    untrusted = ScanTaskFactory()
    page = admin_client.get(reverse("admin:tasks_scantask_change", args=[untrusted.pk])).content.decode()
    assert "an untrusted scan takes no credentials" in page


def test_completed_scan_erases_credentials_a_retried_failure_keeps_them_until_it_completes(
    transactional_db, redis_conn, emulator, settings  # noqa: F811
):
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0, 0]
    pool, _ = emulated_pool(emulator, [1, 1], scope=["192.0.2.0/24"])
    good = submit(pool=pool.name, name="good", targets=["192.0.2.10"], scan_type="authenticated",
                  credentials={"username": "root", "password": "good"})
    run_until([pool], lambda: ScanTask.objects.get(pk=good.pk).is_terminal, timeout=30)
    good.refresh_from_db()
    assert good.status == "completed" and good.credentials is None and len(_erased_events(good)) == 1

    bad = submit(pool=pool.name, name="bad", targets=["192.0.2.11"], scan_type="authenticated",
                 credentials={"username": "root", "password": "bad"})
    run_until([pool], lambda: ScanTask.objects.get(pk=bad.pk).is_terminal, timeout=30)
    bad.refresh_from_db()
    assert bad.status == "failed" and bad.credentials == {"username": "root", "password": "bad"}
    assert not _erased_events(bad)
    retry(bad.pk, actor="bob")
    assert ScanTask.objects.get(pk=bad.pk).credentials == {"username": "root", "password": "bad"}  # reused
