"""Secrets are encrypted at rest (the raw column holds no plaintext), rotate with MultiFernet, and never
appear in reprs, admin pages, admin history or exports."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from scanners.config import export_yaml
from scanners.models import Scanner
from scanpool_site import crypto
from scanpool_site.fields import Secret
from tasks.models import ScanTask, ScanType
from tests.factories import ScannerFactory, ScanTaskFactory

pytestmark = pytest.mark.django_db

PASSWORD = "Pl41ntext-Password-xyz"
ACCESS_KEY = "ak-0123456789abcdef-plain"
SECRET_KEY = "sk-fedcba9876543210-plain"
SSH_PASSWORD = "ssh-Pl41n-secret"


def raw(table: str, column: str, pk: object) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def _scanner() -> Scanner:
    return ScannerFactory(password=PASSWORD, access_key=ACCESS_KEY, secret_key=SECRET_KEY)


def _task() -> ScanTask:
    return ScanTaskFactory(scan_type=ScanType.AUTHENTICATED, credentials={"username": "root", "password": SSH_PASSWORD})


def test_raw_database_columns_hold_no_plaintext():
    scanner = _scanner()
    task = _task()
    task_pk = task.pk.hex  # SQLite stores UUIDs as 32 hex characters
    for column, plain in (("password", PASSWORD), ("access_key", ACCESS_KEY), ("secret_key", SECRET_KEY)):
        stored = raw("scanners_scanner", column, scanner.pk)
        assert stored.startswith(crypto.PREFIX)
        assert plain not in stored
    stored = raw("tasks_scantask", "credentials", task_pk)
    assert stored.startswith(crypto.PREFIX)
    assert SSH_PASSWORD not in stored and "root" not in stored

    # ... and the application reads the plaintext back.
    scanner = Scanner.objects.get(pk=scanner.pk)
    assert (scanner.password, scanner.access_key, scanner.secret_key) == (PASSWORD, ACCESS_KEY, SECRET_KEY)
    assert ScanTask.objects.get(pk=task.pk).credentials == {"username": "root", "password": SSH_PASSWORD}


def test_unset_secrets_stay_empty_in_the_database():
    scanner = ScannerFactory(password="pw", access_key="", secret_key="")
    task = ScanTaskFactory(credentials=None)
    assert raw("scanners_scanner", "access_key", scanner.pk) == ""
    assert raw("tasks_scantask", "credentials", task.pk.hex) is None


def test_reprs_strs_and_logs_never_show_secrets(caplog):
    scanner = Scanner.objects.get(pk=_scanner().pk)
    task = ScanTask.objects.get(pk=_task().pk)
    logger = logging.getLogger("scanpool.test")
    with caplog.at_level(logging.INFO, logger="scanpool.test"):
        logger.info("scanner %r %s task %r %s", scanner, scanner, task, task)
        logger.info("password %r", scanner.password)
        logger.info("fields %r", vars(scanner))
    texts = [repr(scanner), str(scanner), repr(task), str(task), repr(scanner.password), caplog.text]
    for text in texts:
        for secret in (PASSWORD, ACCESS_KEY, SECRET_KEY, SSH_PASSWORD):
            assert secret not in text
    assert isinstance(scanner.password, Secret)
    assert repr(scanner.password) == "Secret('********')"


def test_admin_pages_and_history_never_show_secrets(admin_client):
    scanner = _scanner()
    task = _task()
    for url in (
        reverse("admin:scanners_scanner_change", args=[scanner.pk]),
        reverse("admin:scanners_scanner_changelist"),
        reverse("admin:tasks_scantask_change", args=[task.pk]),
        reverse("admin:tasks_scantask_changelist"),
    ):
        body = admin_client.get(url).content.decode()
        for secret in (PASSWORD, ACCESS_KEY, SECRET_KEY, SSH_PASSWORD):
            assert secret not in body, url

    # Replacing a secret records *that* it changed, never the value.
    new_password = "Another-Plaintext-123"
    response = admin_client.post(
        reverse("admin:scanners_scanner_change", args=[scanner.pk]),
        {
            "pool": scanner.pool_id,
            "name": scanner.name,
            "kind": "nessus",
            "url": scanner.url,
            "username": "admin",
            "password": new_password,
            "max_concurrent_scans": 2,
            "enabled": "on",
            "allow_plain_http": "on",  # the factory's scanners speak plain HTTP on loopback
        },
    )
    assert response.status_code == 302
    entry = LogEntry.objects.get(object_id=str(scanner.pk))
    assert "Password" in entry.get_change_message() or "password" in entry.change_message
    assert new_password not in entry.change_message
    assert Scanner.objects.get(pk=scanner.pk).password == new_password


def test_export_writes_placeholders_not_secrets():
    _scanner()
    text = export_yaml()
    for secret in (PASSWORD, ACCESS_KEY, SECRET_KEY):
        assert secret not in text
    assert "${" in text


def test_rotation_old_key_still_decrypts_and_rotate_secrets_moves_to_the_newest(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SCANPOOL_SECRET_KEYS = [old]
    scanner = _scanner()
    task = _task()
    before = raw("scanners_scanner", "password", scanner.pk)

    settings.SCANPOOL_SECRET_KEYS = [new, old]  # a new key first: old values still decrypt
    assert Scanner.objects.get(pk=scanner.pk).password == PASSWORD
    call_command("rotate_secrets", stdout=open("/dev/null", "w"))
    after = raw("scanners_scanner", "password", scanner.pk)
    assert after != before and PASSWORD not in after

    settings.SCANPOOL_SECRET_KEYS = [new]  # the old key is gone: everything was re-encrypted
    scanner = Scanner.objects.get(pk=scanner.pk)
    assert (scanner.password, scanner.access_key, scanner.secret_key) == (PASSWORD, ACCESS_KEY, SECRET_KEY)
    assert ScanTask.objects.get(pk=task.pk).credentials["password"] == SSH_PASSWORD

    settings.SCANPOOL_SECRET_KEYS = [old]  # and the old key alone no longer opens them
    with pytest.raises(crypto.SecretDecryptionError, match="SCANPOOL_SECRET_KEYS"):
        Scanner.objects.get(pk=scanner.pk)


def test_rotate_secrets_refuses_and_changes_nothing_when_a_key_is_missing(settings):
    first = Fernet.generate_key().decode()
    settings.SCANPOOL_SECRET_KEYS = [first]
    kept = _scanner()
    kept_raw = raw("scanners_scanner", "password", kept.pk)
    settings.SCANPOOL_SECRET_KEYS = [Fernet.generate_key().decode()]  # the key it was written with is missing
    with pytest.raises(CommandError, match=r"cannot be decrypted.*nothing was changed"):
        call_command("rotate_secrets")
    assert raw("scanners_scanner", "password", kept.pk) == kept_raw


def test_an_invalid_key_is_a_clear_configuration_error(settings):
    settings.SCANPOOL_SECRET_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="SCANPOOL_SECRET_KEYS entry #1 is not a valid Fernet key"):
        crypto.encrypt("x")


def test_without_configured_keys_a_key_is_derived_from_the_django_secret_key(settings):
    settings.SCANPOOL_SECRET_KEYS = []
    token = crypto.encrypt("hello")
    assert crypto.decrypt(token) == "hello"
    settings.SECRET_KEY = "a-different-django-secret-key-for-this-test-only-0123456789"
    with pytest.raises(crypto.SecretDecryptionError):
        crypto.decrypt(token)


@pytest.mark.parametrize("old_django_key", [crypto.LEGACY_DEV_SECRET_KEY, "an-operators-own-django-secret-key-0123"])
def test_secrets_written_with_an_older_releases_derived_key_still_decrypt_and_rotate(settings, old_django_key):
    """Older releases encrypted with a key derived from DJANGO_SECRET_KEY (the public dev key under `make run`).
    With a configured (or generated) Fernet key those secrets still read, and rotate_secrets moves them."""
    settings.SECRET_KEY = old_django_key
    settings.SCANPOOL_SECRET_KEYS = []  # how the older release ran
    scanner = _scanner()
    legacy_raw = raw("scanners_scanner", "password", scanner.pk)

    new = Fernet.generate_key().decode()
    settings.SCANPOOL_SECRET_KEYS = [new]  # the upgrade: a real key is configured (or generated into var/)
    assert Scanner.objects.get(pk=scanner.pk).password == PASSWORD
    fresh = crypto.encrypt("new value")
    assert Fernet(new.encode()).decrypt(fresh[len(crypto.PREFIX):].encode()) == b"new value"  # never a legacy key

    call_command("rotate_secrets", stdout=open("/dev/null", "w"))
    rotated = raw("scanners_scanner", "password", scanner.pk)
    assert rotated != legacy_raw
    assert Fernet(new.encode()).decrypt(rotated[len(crypto.PREFIX):].encode()).decode() == PASSWORD


def test_dumpdata_keeps_secrets_encrypted_and_loaddata_restores_them(tmp_path):
    scanner = _scanner()
    task = _task()
    dump = tmp_path / "dump.json"
    call_command("dumpdata", "pools", "scanners", "tasks.ScanTask", output=str(dump), verbosity=0)
    text = dump.read_text()
    for secret in (PASSWORD, ACCESS_KEY, SECRET_KEY, SSH_PASSWORD):
        assert secret not in text
    assert crypto.PREFIX in text

    ScanTask.objects.all().delete()
    Scanner.objects.all().delete()
    call_command("loaddata", str(dump), verbosity=0)
    restored = Scanner.objects.get(pk=scanner.pk)
    assert (restored.password, restored.access_key, restored.secret_key) == (PASSWORD, ACCESS_KEY, SECRET_KEY)
    assert ScanTask.objects.get(pk=task.pk).credentials["password"] == SSH_PASSWORD


def test_error_reports_hide_typed_secrets(admin_client):
    """Django's 500 pages and error mails filter these POST fields (sensitive_post_parameters)."""
    from django.views.debug import SafeExceptionReporterFilter

    scanner = _scanner()
    response = admin_client.post(
        reverse("admin:scanners_scanner_change", args=[scanner.pk]), {"password": "typed-secret", "name": ""}
    )
    filtered = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert filtered["password"] != "typed-secret" and set(filtered["password"]) == {"*"}

    response = admin_client.post(reverse("admin:tasks_scantask_add"), {"credential_password": "typed-ssh-secret"})
    filtered = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert set(filtered["credential_password"]) == {"*"}


def test_rotate_secrets_never_writes_back_a_secret_changed_while_it_ran(settings, monkeypatch):
    """A worker may erase a task's credentials (it completed) or an admin type a new password after
    rotate_secrets read the rows: the rotation must not put the old value back."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SCANPOOL_SECRET_KEYS = [old]
    _task(), _task()
    settings.SCANPOOL_SECRET_KEYS = [new, old]
    real_rotate, erased = crypto.rotate, []

    def rotate_while_a_worker_erases(token: str) -> str:
        if not erased:  # the other task ends while the rotation is between its read and its writes
            with connection.cursor() as cursor:
                cursor.execute("SELECT id FROM tasks_scantask WHERE credentials <> %s", [token])
                erased.extend(row[0] for row in cursor.fetchall())
                cursor.execute("UPDATE tasks_scantask SET credentials = NULL WHERE credentials <> %s", [token])
        return real_rotate(token)

    monkeypatch.setattr("scanpool_site.rotation.crypto.rotate", rotate_while_a_worker_erases)
    call_command("rotate_secrets", stdout=open("/dev/null", "w"))
    assert len(erased) == 1
    assert ScanTask.objects.filter(credentials__isnull=False).count() == 1
    assert raw("tasks_scantask", "credentials", erased[0]) is None
