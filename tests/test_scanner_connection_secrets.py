"""Issue #8 item 1: changing a scanner's connection must not exfiltrate its stored secrets.

A staff user with only change_scanner/view_scanner points a scanner at a *recording HTTP server* (a real
server on loopback) and presses "Check health now": the server must receive no API key and no password.
The same holds through load_scanners, and for a task dispatched to the changed scanner afterwards."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from scanners.models import Health, Scanner, ScannerEvent, ScannerEventKind
from scanners.services import confirm_connection, update_scanner
from tasks.models import ScanTask
from tasks.services import submit
from tests.engine_support import run_jobs, run_until
from tests.factories import PoolFactory, ScannerFactory, UserFactory
from tests.recording_server import RecordingServer
from tests.scanner_config_support import load, scanner_form, write

AK, SK, PW = "AK-stored-secret-4711", "SK-stored-secret-4711", "PW-stored-secret-4711"
SECRETS = (AK, SK, PW)


@pytest.fixture
def recorder():
    with RecordingServer() as server:
        yield server


@pytest.fixture
def staff_client(client):
    """A low-privilege staff user: may view and change scanners, nothing else."""
    user = UserFactory(username="lowpriv", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_scanner", "change_scanner"]))
    client.force_login(user)
    return client




def _check_health(client, scanner: Scanner):
    return client.post(
        reverse("admin:scanners_scanner_changelist"),
        {"action": "check_health_action", "_selected_action": [str(scanner.pk)]},
        follow=True,
    )


@pytest.mark.django_db
def test_low_privilege_url_change_then_health_check_sends_no_stored_secret(staff_client, recorder):
    scanner = ScannerFactory(url="https://scanner.example.com:8834", allow_plain_http=False,
                             access_key=AK, secret_key=SK, username="admin", password=PW, health=Health.READY)
    page = staff_client.post(
        reverse("admin:scanners_scanner_change", args=[scanner.pk]), scanner_form(scanner, url=recorder.url),
        follow=True,
    )
    body = page.content.decode()
    assert page.status_code == 200 and "were cleared because the url changed" in body, body[-3000:]

    scanner.refresh_from_db()
    assert (scanner.url, scanner.access_key, scanner.secret_key, scanner.password) == (recorder.url, "", "", "")
    assert scanner.health == Health.AUTH_FAILED and "type the API keys or password again" in scanner.health_detail

    response = _check_health(staff_client, scanner)
    assert response.status_code == 200
    assert recorder.requests, "the health check should have reached the new URL"
    received = recorder.received()
    assert not any(secret in received for secret in SECRETS), received
    assert all("X-ApiKeys" not in r.headers for r in recorder.requests)
    assert all(r.path != "/session" or r.method != "POST" for r in recorder.requests)

    # The change is recorded (old → new, who) and shown on the scanner's page, to the same low-privilege user.
    event = ScannerEvent.objects.get(scanner=scanner, kind=ScannerEventKind.URL_CHANGED)
    assert event.actor == "lowpriv"
    assert event.message == f"url: https://scanner.example.com:8834 → {recorder.url}"
    cleared = ScannerEvent.objects.get(scanner=scanner, kind=ScannerEventKind.SECRETS_CLEARED)
    assert "access_key, secret_key, password" in cleared.message
    page = staff_client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    assert "Connection history" in page and recorder.url in page and "lowpriv" in page
    assert "clears the stored API keys and password unless you type them again" in page


@pytest.mark.django_db
def test_tls_or_pool_change_clears_secrets_too_and_secrets_typed_again_are_kept(admin_client, tmp_path):
    scanner = ScannerFactory(access_key=AK, secret_key=SK, username="", password="")
    url = reverse("admin:scanners_scanner_change", args=[scanner.pk])

    # TLS verification turned on, new keys typed in the same form: the typed keys are stored.
    response = admin_client.post(url, scanner_form(scanner, verify_tls="on", access_key="AK-new", secret_key="SK-new"))
    assert response.status_code == 302, response.content.decode()[-2000:]
    scanner.refresh_from_db()
    assert (scanner.verify_tls, scanner.access_key, scanner.secret_key) == (True, "AK-new", "SK-new")
    assert scanner.health == Health.UNKNOWN
    assert not ScannerEvent.objects.filter(scanner=scanner, kind=ScannerEventKind.SECRETS_CLEARED).exists()
    assert ScannerEvent.objects.filter(scanner=scanner, kind=ScannerEventKind.CONNECTION_CHANGED).count() == 1

    # Moving it to another pool without typing them: cleared.
    other = PoolFactory(allow_plain_http=True)
    response = admin_client.post(url, scanner_form(scanner, pool=str(other.pk), verify_tls="on"))
    assert response.status_code == 302
    scanner.refresh_from_db()
    assert (scanner.pool_id, scanner.access_key, scanner.secret_key) == (other.pk, "", "")

    # Typing only half of a login after a change is refused with a message; nothing is saved.
    scanner = ScannerFactory(access_key=AK, secret_key=SK, username="", password="")
    url = reverse("admin:scanners_scanner_change", args=[scanner.pk])
    response = admin_client.post(url, scanner_form(scanner, url="http://127.0.0.1:9", access_key="AK-half"))
    assert response.status_code == 200
    assert "secret_key is missing" in response.content.decode()
    scanner.refresh_from_db()
    assert (scanner.access_key, scanner.secret_key) == (AK, SK)


@pytest.mark.django_db
def test_plain_http_is_refused_unless_the_scanner_or_pool_allows_it(admin_client):
    scanner = ScannerFactory(url="https://scanner.example.com:8834", allow_plain_http=False, password=PW)
    url = reverse("admin:scanners_scanner_change", args=[scanner.pk])
    data = scanner_form(scanner, url="http://scanner.example.com:8834")
    del data["allow_plain_http"]
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "uses plain http://" in response.content.decode()
    scanner.refresh_from_db()
    assert (scanner.url, scanner.password) == ("https://scanner.example.com:8834", PW)

    scanner.pool.allow_plain_http = True
    scanner.pool.save()
    response = admin_client.post(url, data)
    assert response.status_code == 302
    scanner.refresh_from_db()
    assert scanner.url == "http://scanner.example.com:8834"

    # And in the service (the loader's path): refused, nothing half-written.
    other = ScannerFactory(url="https://b.example.com:8834", allow_plain_http=False, password=PW)
    other.pool.allow_plain_http = False
    other.pool.save()
    with pytest.raises(Exception, match="plain http"):
        update_scanner(other.pk, {"url": "http://b.example.com:8834"}, actor="test")
    other.refresh_from_db()
    assert (other.url, other.password) == ("https://b.example.com:8834", PW)
    assert not ScannerEvent.objects.filter(scanner=other).exists()


@pytest.mark.django_db
def test_load_scanners_applies_the_same_rule_and_records_events(tmp_path, recorder, monkeypatch):
    from scanners.health import check_health

    scanner = ScannerFactory(name="yaml-s1", pool=PoolFactory(name="yaml-pool", allow_plain_http=True),
                             url="https://old.example.com:8834", access_key=AK, secret_key=SK, username="",
                             password="", health=Health.READY)  # fmt: skip
    monkeypatch.setenv("NEW_PASSWORD", "new-login-password")
    path = write(tmp_path, f"""\
        pools:
          - name: yaml-pool
            allow_plain_http: true
            scanners:
              - name: yaml-s1
                url: {recorder.url}
                username: svc
                password: ${{NEW_PASSWORD}}
                verify_tls: false
        """)
    err = io.StringIO()
    call_command("load_scanners", str(path), "--dry-run", stdout=io.StringIO(), stderr=err)
    assert "scanners.yaml:5: scanner 'yaml-s1': its url changes, so the stored access_key, " \
           "secret_key (not given in this entry) are cleared" in err.getvalue()
    assert Scanner.objects.get(pk=scanner.pk).access_key == AK  # a dry run changes nothing

    load(path)
    scanner.refresh_from_db()
    assert (scanner.url, scanner.access_key, scanner.secret_key) == (recorder.url, "", "")
    assert (scanner.username, scanner.password) == ("svc", "new-login-password")
    events = list(ScannerEvent.objects.filter(scanner=scanner).values_list("kind", "actor", "message"))
    assert ("url_changed", f"load_scanners {path}", f"url: https://old.example.com:8834 → {recorder.url}") in events

    check_health(scanner.pk)
    received = recorder.received()
    assert recorder.requests and not any(secret in received for secret in SECRETS), received


@pytest.mark.django_db(transaction=True)
def test_task_dispatched_to_a_changed_scanner_carries_no_old_secret(staff_client, recorder, redis_conn, settings):
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0, 0]
    pool = PoolFactory(scope=["192.0.2.0/24"])
    scanner = ScannerFactory(pool=pool, url="https://scanner.example.com:8834", access_key=AK, secret_key=SK,
                             username="admin", password=PW, health=Health.READY)  # fmt: skip
    staff_client.post(reverse("admin:scanners_scanner_change", args=[scanner.pk]),
                      scanner_form(scanner, url=recorder.url))
    # Even if someone marks it ready again without typing credentials, a task sends nothing secret there.
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    task = submit(pool=pool.name, name="after-change", targets=["192.0.2.10"], scan_type="authenticated",
                  credentials={"username": "root", "password": "ssh-task-secret"}, scanner_instance=scanner.name)
    # The changed connection is unconfirmed (four eyes): the authenticated task is not even dispatched there.
    run_jobs([pool])
    task.refresh_from_db()
    assert (task.status, task.assigned_scanner_id) == ("queued", None)
    # Once another person confirms the connection, it is; and still no old secret goes there.
    confirm_connection(scanner.pk, actor="reviewer")
    run_until([pool], lambda: ScanTask.objects.get(pk=task.pk).is_terminal, timeout=30)
    task.refresh_from_db()
    assert task.status == "failed" and "no API keys and no username/password" in task.error_message
    received = recorder.received()
    assert not any(secret in received for secret in (*SECRETS, "ssh-task-secret")), received
