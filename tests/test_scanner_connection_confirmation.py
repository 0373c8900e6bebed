"""Four eyes on where scan credentials go (docs/security.md, "Scanners and their owners").

The hole: a staff user with only ``scanners.change_scanner`` pointed a scanner at a listener of theirs (typing
credentials it accepts), made it Ready with *Check health now*, disabled the pool's other scanners, and every
authenticated scan — SSH password included — went to the listener. Now a connection changed in the admin is
unconfirmed until another person with ``scanners.confirm_scanner_connection`` confirms it, and tasks with
credentials are never dispatched (nor launched) to an unconfirmed scanner; scans without credentials still are.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.urls import reverse

from scanners.models import Health, Scanner, ScannerEvent, ScannerEventKind
from scanners.services import confirm_connection, connection_fingerprint, update_scanner
from tasks import services
from tasks.engine.confirmation import WAITING_FOR
from tasks.engine.dispatch import dispatch_round
from tasks.engine.launch import launch
from tasks.models import ScanTask, TaskEvent, TaskStatus
from tasks.services import submit
from tests.engine_support import run_jobs, run_until
from tests.factories import PoolFactory, ScannerFactory, SuperUserFactory, UserFactory
from tests.scanner_config_support import load, scanner_form, write

SSH_SECRET = "ssh-task-secret-0815"
CREDS = {"username": "root", "password": SSH_SECRET}


def _staff(username: str, *codenames: str):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="scanners", codename__in=codenames))
    return user




def _action(client, action: str, scanner: Scanner):
    return client.post(reverse("admin:scanners_scanner_changelist"),
                       {"action": action, "_selected_action": [str(scanner.pk)]}, follow=True)


def _waiting_events(task: ScanTask) -> list[TaskEvent]:
    return list(TaskEvent.objects.filter(task=task, data__waiting_for=WAITING_FOR))


@pytest.mark.django_db(transaction=True)
def test_change_scanner_alone_cannot_receive_the_ssh_password_of_authenticated_scans(client, emulator, redis_conn):
    """The reviewed attack, end to end, against the bundled emulator as the attacker's listener."""
    pool = PoolFactory(scope=["192.0.2.0/24"])
    good = ScannerFactory(pool=pool, name="emulator-1", url=emulator.urls[0], username=emulator.username,
                          password=emulator.password, health=Health.READY)
    target = ScannerFactory(pool=pool, name="emulator-3", url="https://scanner.example.com:8834",
                            allow_plain_http=False, username="admin", password="stored-pw", health=Health.READY)
    attacker = _staff("mallory", "view_scanner", "change_scanner")
    client.force_login(attacker)

    # (1) point emulator-3 at "their" listener, plain HTTP allowed, a login it accepts typed in.
    page = client.post(reverse("admin:scanners_scanner_change", args=[target.pk]),
                       scanner_form(target, url=emulator.urls[1], username=emulator.username,
                                    password=emulator.password),
                       follow=True)
    assert page.status_code == 200 and "its url, allow_plain_http changed" in page.content.decode()
    target.refresh_from_db()
    assert target.url == emulator.urls[1] and not target.connection_confirmed
    needs = ScannerEvent.objects.get(scanner=target, kind=ScannerEventKind.NEEDS_CONFIRMATION)
    assert needs.actor == "mallory"
    # (2) Check health now: Ready (the listener accepts the login).
    _action(client, "check_health_action", target)
    target.refresh_from_db()
    assert target.health == Health.READY
    # (3) disable the pool's other scanner (an ordinary field: it stays confirmed, it only gets no work).
    response = client.post(reverse("admin:scanners_scanner_change", args=[good.pk]), scanner_form(good, enabled=None))
    assert response.status_code == 302
    good.refresh_from_db()
    assert not good.enabled and good.connection_confirmed

    # The list and the page say so.
    listing = client.get(reverse("admin:scanners_scanner_changelist")).content.decode()
    assert "unconfirmed: no authenticated scans" in listing
    change_page = client.get(reverse("admin:scanners_scanner_change", args=[target.pk])).content.decode()
    assert "dispatched here until a person other than whoever set this connection (mallory)" in change_page
    assert 'name="_confirm_connection"' not in change_page  # the button only for whoever may confirm

    authenticated = submit(pool=pool.name, name="auth-scan", targets=["192.0.2.10"], scan_type="authenticated",
                           credentials=CREDS)
    untrusted = submit(pool=pool.name, name="plain-scan", targets=["192.0.2.11"])
    run_until([pool], lambda: ScanTask.objects.get(pk=untrusted.pk).is_terminal, timeout=60)
    for _ in range(3):  # more dispatch passes: still one explanation
        dispatch_round(pool.pk)
    run_jobs([pool])
    untrusted.refresh_from_db()
    authenticated.refresh_from_db()
    assert untrusted.status == TaskStatus.COMPLETED and untrusted.assigned_scanner_id == target.pk
    assert (authenticated.status, authenticated.assigned_scanner_id) == (TaskStatus.QUEUED, None)
    [event] = _waiting_events(authenticated)
    assert "emulator-3" in event.message and "not confirmed" in event.message and event.data["attempt"] == 1
    listener_scans = [s["name"] for s in emulator.control(1).scans()]
    assert not any("auth-scan" in name for name in listener_scans), listener_scans

    # The changer cannot confirm: no permission (the action is not even offered) …
    _action(client, "confirm_connection_action", target)
    assert not Scanner.objects.get(pk=target.pk).connection_confirmed
    confirm_url = reverse("admin:scanners_scanner_confirm_connection", args=[target.pk])
    page = client.post(confirm_url, follow=True).content.decode()
    assert "needs the permission scanners.confirm_scanner_connection" in page
    # … nor with the permission: four eyes.
    attacker.user_permissions.add(Permission.objects.get(codename="confirm_scanner_connection"))
    page = _action(client, "confirm_connection_action", target).content.decode()
    assert "another person must confirm it" in page
    page = client.post(confirm_url, follow=True).content.decode()
    assert "another person must confirm it" in page
    assert not Scanner.objects.get(pk=target.pk).connection_confirmed
    assert client.get(confirm_url).status_code == 405  # POST only

    # A second person with the permission confirms (the button on the change page): the scan goes there.
    reviewer = _staff("rita", "view_scanner", "confirm_scanner_connection")
    client.force_login(reviewer)
    seen = connection_fingerprint(Scanner.objects.get(pk=target.pk))  # the button's value on the page she reviewed
    assert f'value="{seen}"' in client.get(reverse("admin:scanners_scanner_change", args=[target.pk])).content.decode()
    page = client.post(confirm_url, {"_confirm_connection": seen}, follow=True).content.decode()
    # The admin capitalises messages: a message starting with the name read "Emulator-3: …", not the scanner's name.
    assert "Scanner emulator-3: connection confirmed for authenticated scans." in page
    target.refresh_from_db()
    assert target.connection_confirmed and target.connection_confirmed_by == "rita"
    confirmed = ScannerEvent.objects.get(scanner=target, kind=ScannerEventKind.CONNECTION_CONFIRMED)
    assert confirmed.actor == "rita" and emulator.urls[1] in confirmed.message
    run_until([pool], lambda: ScanTask.objects.get(pk=authenticated.pk).assigned_scanner_id is not None, timeout=30)
    assert ScanTask.objects.get(pk=authenticated.pk).assigned_scanner_id == target.pk


@pytest.mark.django_db
def test_dispatch_skips_unconfirmed_scanners_for_credentials_only_and_explains_once():
    pool = PoolFactory()
    confirmed = ScannerFactory(pool=pool, name="a-confirmed", max_concurrent_scans=1)
    unconfirmed = ScannerFactory(pool=pool, name="b-unconfirmed", max_concurrent_scans=5, connection_confirmed=False)
    first = submit(pool=pool.name, name="auth-1", targets=["192.0.2.1"], scan_type="authenticated", credentials=CREDS)
    second = submit(pool=pool.name, name="auth-2", targets=["192.0.2.2"], scan_type="authenticated_privileged",
                    credentials={**CREDS, "elevate_privileges_with": "sudo"})
    plain = submit(pool=pool.name, name="plain", targets=["192.0.2.3"])
    pinned = submit(pool=pool.name, name="pinned", targets=["192.0.2.4"], scan_type="authenticated",
                    credentials=CREDS, scanner_instance=unconfirmed.name)

    assert dispatch_round(pool.pk) == 2
    for _ in range(2):
        assert dispatch_round(pool.pk) == 0
    tasks = {t.name: t for t in ScanTask.objects.all()}
    assert tasks["auth-1"].assigned_scanner_id == confirmed.pk  # the confirmed scanner's one slot
    assert tasks["plain"].assigned_scanner_id == unconfirmed.pk  # behind a held-back task: still dispatched
    assert tasks["auth-2"].assigned_scanner_id is None and tasks["pinned"].assigned_scanner_id is None
    assert _waiting_events(first) == []
    [held] = _waiting_events(second)
    assert held.data["scanners"] == ["b-unconfirmed"]
    [held_pinned] = _waiting_events(pinned)
    assert "b-unconfirmed" in held_pinned.message

    confirm_connection(unconfirmed.pk, actor="reviewer")
    assert dispatch_round(pool.pk) == 2
    assert set(ScanTask.objects.filter(pk__in=[second.pk, pinned.pk]).values_list("assigned_scanner_id", flat=True)) \
        == {unconfirmed.pk}
    assert plain.pk and len(_waiting_events(second)) == 1


@pytest.mark.django_db
def test_a_full_pool_is_not_explained_as_unconfirmed():
    pool = PoolFactory()
    ScannerFactory(pool=pool, max_concurrent_scans=1, active_scans=1)
    task = submit(pool=pool.name, name="auth", targets=["192.0.2.1"], scan_type="authenticated", credentials=CREDS)
    assert dispatch_round(pool.pk) == 0
    assert _waiting_events(task) == []


@pytest.mark.django_db
def test_retry_of_a_failed_authenticated_task_does_not_go_to_an_unconfirmed_scanner():
    pool = PoolFactory()
    scanner = ScannerFactory(pool=pool, name="only-one")
    task = submit(pool=pool.name, name="auth", targets=["192.0.2.1"], scan_type="authenticated", credentials=CREDS)
    ScanTask.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED, error_message="boom")
    update_scanner(scanner.pk, {"url": "http://127.0.0.1:18193"}, given_secrets=["password"], actor="mallory")
    assert not Scanner.objects.get(pk=scanner.pk).connection_confirmed

    services.retry(task.pk, actor="operator")
    assert dispatch_round(pool.pk) == 0
    task.refresh_from_db()
    assert (task.status, task.attempts, task.assigned_scanner_id) == (TaskStatus.QUEUED, 2, None)
    assert [e.data["attempt"] for e in _waiting_events(task)] == [2]


@pytest.mark.django_db
def test_a_connection_changed_after_the_claim_is_not_launched_to(redis_conn):
    pool = PoolFactory()
    scanner = ScannerFactory(pool=pool, health=Health.READY)
    task = submit(pool=pool.name, name="auth", targets=["192.0.2.1"], scan_type="authenticated", credentials=CREDS)
    assert dispatch_round(pool.pk) == 1
    update_scanner(scanner.pk, {"url": "http://127.0.0.1:18193"}, given_secrets=["password"], actor="mallory")
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    launch(task.pk)
    task.refresh_from_db()
    assert (task.status, task.assigned_scanner_id, task.claimed_at, task.slot_held) == (
        TaskStatus.QUEUED, None, None, False)
    assert TaskEvent.objects.filter(task=task, message__contains="is not confirmed for authenticated scans").exists()


@pytest.mark.django_db
def test_who_may_confirm():
    scanner = ScannerFactory()
    update_scanner(scanner.pk, {"url": "https://elsewhere.example.com:8834"}, given_secrets=["password"],
                   actor="mallory")
    with pytest.raises(PermissionDenied, match="needs the permission"):
        confirm_connection(scanner.pk, user=_staff("nobody", "view_scanner", "change_scanner"))
    with pytest.raises(PermissionDenied, match="four eyes"):
        confirm_connection(scanner.pk, user=_staff("mallory", "confirm_scanner_connection"))
    # An earlier change by someone else does not make a later change by the confirmer confirmable by them.
    update_scanner(scanner.pk, {"verify_tls": True}, actor="rita")
    with pytest.raises(PermissionDenied, match="four eyes"):
        confirm_connection(scanner.pk, user=_staff("rita", "confirm_scanner_connection"))
    assert not Scanner.objects.get(pk=scanner.pk).connection_confirmed
    # A superuser may confirm even their own change.
    boss = SuperUserFactory(username="boss")
    update_scanner(scanner.pk, {"url": "https://third.example.com:8834"}, given_secrets=["password"], actor="boss")
    assert confirm_connection(scanner.pk, user=boss, seen=connection_fingerprint(Scanner.objects.get(pk=scanner.pk)))
    assert Scanner.objects.get(pk=scanner.pk).connection_confirmed_by == "boss"
    # A change of anything else (enabled, limits, the login) keeps it confirmed.
    update_scanner(scanner.pk, {"enabled": False, "max_concurrent_scans": 3, "password": "new"}, actor="mallory")
    assert Scanner.objects.get(pk=scanner.pk).connection_confirmed


@pytest.mark.django_db
def test_a_scanner_added_in_the_admin_starts_unconfirmed(admin_client):
    pool = PoolFactory(allow_plain_http=True)
    response = admin_client.post(reverse("admin:scanners_scanner_add"), {
        "pool": pool.pk, "name": "new-one", "kind": "nessus", "url": "http://127.0.0.1:18193", "username": "u",
        "password": "p", "max_concurrent_scans": 1, "enabled": "on", "description": "", "ca_bundle": "",
    })
    assert response.status_code == 302, response.content.decode()[-2000:]
    scanner = Scanner.objects.get(name="new-one")
    assert not scanner.connection_confirmed
    assert "unconfirmed" in ScannerEvent.objects.get(scanner=scanner).message


@pytest.mark.django_db
def test_load_scanners_confirms_what_it_writes(tmp_path):
    listed = ScannerFactory(name="yaml-s1", pool=PoolFactory(name="yaml-pool", allow_plain_http=True),
                            url="http://127.0.0.1:18001", username="admin", password="admin")
    update_scanner(listed.pk, {"url": "http://127.0.0.1:18193"}, given_secrets=["password"], actor="mallory")
    path = write(tmp_path, """\
        pools:
          - name: yaml-pool
            allow_plain_http: true
            scanners:
              - name: yaml-s1
                url: http://127.0.0.1:18193
                username: admin
                password: admin
                verify_tls: false
                max_concurrent_scans: 2
              - name: yaml-s2
                url: http://127.0.0.1:18002
                username: admin
                password: admin
                verify_tls: false
        """)
    out = io.StringIO()
    call_command("load_scanners", str(path), "--dry-run", stdout=out, stderr=io.StringIO())
    [line] = [line for line in out.getvalue().splitlines() if "scanner yaml-s1" in line]
    assert line.startswith("would update") and line.endswith("connection_confirmed"), line
    assert not Scanner.objects.get(pk=listed.pk).connection_confirmed

    load(path)
    for scanner in Scanner.objects.filter(name__in=["yaml-s1", "yaml-s2"]):
        assert scanner.connection_confirmed and scanner.connection_confirmed_by == f"load_scanners {path}"
        assert ScannerEvent.objects.filter(scanner=scanner, kind=ScannerEventKind.CONNECTION_CONFIRMED,
                                           actor=f"load_scanners {path}").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_migration_confirms_existing_scanners():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("scanners", "0003_scanner_allow_plain_http_and_events")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    OldScanner = old_apps.get_model("scanners", "Scanner")
    pool = PoolFactory(name="legacy")  # only the scanners app was taken back
    OldScanner.objects.create(pool_id=pool.pk, name="legacy-s1", url="https://x:8834")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    scanner = Scanner.objects.get(name="legacy-s1")
    assert scanner.connection_confirmed and scanner.connection_confirmed_by.startswith("migration 0004")
    assert ScannerEvent.objects.filter(scanner=scanner, kind=ScannerEventKind.CONNECTION_CONFIRMED).count() == 1
