"""The admin control room: every page renders for a superuser, changelists cost a bounded number of
queries whatever the row count; add = submit(), actions wired. Edit forms: tests/test_admin_forms.py."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from pools.models import Pool
from scanners.models import BreakerState, Health, Scanner
from tasks.models import AuthStatus, EventKind, ScanTask, ScanType, TaskEvent, TaskStatus
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-Value-that-must-never-show"


def _populate(n: int) -> None:
    """``n`` pools, scanners and tasks (each task with two events) spread over them."""
    pools = PoolFactory.create_batch(max(1, n // 5))
    for i in range(n):
        pool = pools[i % len(pools)]
        scanner = ScannerFactory(pool=pool, active_scans=i % 2, password=SECRET)
        task = ScanTaskFactory(
            pool=pool,
            assigned_scanner=scanner,
            status=TaskStatus.RUNNING if i % 2 else TaskStatus.QUEUED,
            credentials={"username": "root", "password": SECRET},
        )
        TaskEvent.objects.create(task=task, kind=EventKind.STATUS, to_status=TaskStatus.QUEUED, message="queued")
        TaskEvent.objects.create(task=task, kind=EventKind.SCANNER, message=f"scanner {scanner.name} chosen")


CHANGELISTS = ["pools_pool", "scanners_scanner", "tasks_scantask"]

# session + user + the changelist's own queries (rows, filters' choices, date hierarchy, annotations);
# the same bound at 5 and at 50 rows proves there is no per-row query.
MAX_QUERIES = 10


@pytest.mark.parametrize("model", CHANGELISTS)
def test_changelist_queries_do_not_grow_with_rows(model, admin_client, django_assert_max_num_queries):
    url = reverse(f"admin:{model}_changelist")
    _populate(5)
    with django_assert_max_num_queries(MAX_QUERIES):
        response = admin_client.get(url)
    assert response.status_code == 200
    _populate(45)
    with django_assert_max_num_queries(MAX_QUERIES):
        response = admin_client.get(url)
    assert response.status_code == 200
    assert SECRET not in response.content.decode()


@pytest.mark.parametrize("model", CHANGELISTS)
def test_changelist_add_and_change_pages_render(model, admin_client):
    _populate(3)
    objects = {"pools_pool": Pool, "scanners_scanner": Scanner, "tasks_scantask": ScanTask}
    obj = objects[model].objects.first()
    for url in (
        reverse(f"admin:{model}_changelist"),
        reverse(f"admin:{model}_add"),
        reverse(f"admin:{model}_change", args=[obj.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert SECRET not in response.content.decode(), url


def test_connection_fields_are_labelled_as_the_docs_name_them(admin_client):
    """Django derived "Url", "Verify tls", "Ca bundle" and "Allow plain http" from the field names."""
    _populate(1)
    scanner = Scanner.objects.first()
    page = admin_client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    for label in ("URL:", "Verify TLS", "CA bundle:", "Allow plain HTTP"):
        assert f">{label}</label>" in page, label
    page = admin_client.get(reverse("admin:pools_pool_change", args=[scanner.pool_id])).content.decode()
    assert ">Allow plain HTTP</label>" in page
    # The pool page's list of its scanners (a read-only inline: headers come from the model's field names).
    assert re.search(r'<th class="column-url[^"]*">\s*URL\s*<', page), "the scanners' URL column header"
    assert ">Url<" not in page and ">Url\n" not in page


def test_admin_index_lists_the_control_room(admin_client):
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "scanpool control room" in body
    for name in ("Pools", "Scanners", "Scan tasks"):
        assert name in body


def test_pool_list_shows_capacity_load_and_queue(admin_client):
    pool = PoolFactory(name="dmz")
    ScannerFactory(pool=pool, max_concurrent_scans=3, active_scans=2)
    ScannerFactory(pool=pool, max_concurrent_scans=2, active_scans=1)
    ScannerFactory(pool=pool, max_concurrent_scans=5, enabled=False)  # not counted in capacity
    ScannerFactory(pool=pool, max_concurrent_scans=4, breaker_state=BreakerState.OPEN)  # enabled, not usable
    ScannerFactory(pool=pool, max_concurrent_scans=6, health=Health.UNREACHABLE)  # enabled, not usable
    ScanTaskFactory.create_batch(4, pool=pool, status=TaskStatus.QUEUED)
    ScanTaskFactory(pool=pool, status=TaskStatus.COMPLETED)

    response = admin_client.get(reverse("admin:pools_pool_changelist"))
    row = response.context["cl"].result_list[0]
    counts = (row.n_scanners, row.n_enabled_scanners, row.total_capacity, row.total_slots, row.active, row.queued)
    assert counts == (5, 4, 5, 15, 3, 4)
    body = response.content.decode()
    assert "3/5 (60%)" in body  # utilisation of the usable capacity
    assert "5 / 15" in body
    assert "5 (4 enabled)" in body

    # The same numbers as the capacity service the API uses.
    from tasks.pool_load import pool_load

    load = pool_load(pool)
    assert (load.capacity, load.total_slots, load.queued) == (row.total_capacity, row.total_slots, row.queued)


def test_scanner_list_shows_pool_health_breaker_and_slots(admin_client):
    ScannerFactory(
        name="dmz-1",
        pool=PoolFactory(name="dmz"),
        url="https://dmz-1:8834",
        health=Health.READY,
        breaker_state=BreakerState.OPEN,
        consecutive_failures=5,
        max_concurrent_scans=4,
        active_scans=1,
    )
    body = admin_client.get(reverse("admin:scanners_scanner_changelist")).content.decode()
    for text in ("dmz-1", "dmz", "https://dmz-1:8834", "Ready", "Open (5 failures)", "1/4 (25%)"):
        assert text in body


def test_scantask_filters_search_and_date_hierarchy(admin_client):
    pool = PoolFactory(name="lab")
    scanner = ScannerFactory(pool=pool, name="lab-1")
    done = ScanTaskFactory(
        pool=pool,
        name="nightly web",
        targets=["198.51.100.7"],
        status=TaskStatus.COMPLETED,
        assigned_scanner=scanner,
        scan_type=ScanType.AUTHENTICATED,
        auth_status=AuthStatus.FAILED,
    )
    other = ScanTaskFactory(pool=pool, name="weekly db", targets=["192.0.2.44"])
    url = reverse("admin:tasks_scantask_changelist")

    def listed(query: str) -> set:
        response = admin_client.get(url + query)
        assert response.status_code == 200, query
        return {task.pk for task in response.context["cl"].result_list}

    assert listed("") == {done.pk, other.pk}
    assert listed("?status__exact=completed") == {done.pk}
    assert listed(f"?pool__id__exact={pool.pk}") == {done.pk, other.pk}
    assert listed(f"?assigned_scanner__id__exact={scanner.pk}") == {done.pk}
    assert listed("?scan_type__exact=authenticated") == {done.pk}
    assert listed("?auth_status__exact=failed") == {done.pk}
    assert listed("?q=nightly") == {done.pk}
    assert listed("?q=198.51.100.7") == {done.pk}
    assert listed(f"?q={str(other.pk)[:13]}") == {other.pk}
    year = done.created_at.year
    assert listed(f"?created_at__year={year}") == {done.pk, other.pk}


def test_scantask_page_is_read_only_with_timeline_and_masked_credentials(admin_client):
    task = ScanTaskFactory(credentials={"username": "root", "password": SECRET}, scan_type=ScanType.AUTHENTICATED)
    TaskEvent.objects.create(task=task, kind=EventKind.STATUS, to_status=TaskStatus.QUEUED, message="queued by alice")
    response = admin_client.get(reverse("admin:tasks_scantask_change", args=[task.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "queued by alice" in body  # the timeline inline
    assert "•••• set" in body
    assert SECRET not in body
    assert 'name="_save"' not in body  # view-only: nothing to save over a worker's writes
    assert 'name="events-0-message"' not in body  # events are not editable


def test_scantask_add_form_has_write_only_credentials(admin_client):
    PoolFactory(name="lab")
    body = admin_client.get(reverse("admin:tasks_scantask_add")).content.decode()
    assert 'name="targets"' in body
    assert 'type="password" name="credential_password"' in body
    assert 'name="scanner_instance"' in body


# ------------------------------------------------------------------------------ add = submit()


def _add_task_data(**overrides: str) -> dict:
    data = {
        "pool": "lab",
        "scanner_instance": "",
        "name": "from the admin",
        "targets": "192.0.2.10\n192.0.2.11, 192.0.2.12",
        "scan_type": "untrusted",
        "timeout": "",
        "description": "",
        "credential_username": "",
        "credential_password": "",
        "credential_private_key": "",
        "elevate_privileges_with": "",
        "escalation_account": "",
        "escalation_password": "",
    }
    data.update(overrides)
    return data


def test_admin_add_submits_through_the_service(admin_client, admin_user):
    pool = PoolFactory(name="lab", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, name="lab-1")
    response = admin_client.post(
        reverse("admin:tasks_scantask_add"),
        _add_task_data(
            scanner_instance="lab-1",
            scan_type="authenticated",
            credential_username="root",
            credential_password=SECRET,
            timeout="2h",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    task = ScanTask.objects.get()
    assert (task.name, task.pool, task.status, task.timeout_seconds) == ("from the admin", pool, "queued", 7200)
    assert task.targets == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    assert task.requested_scanner.name == "lab-1" and task.requested_by == admin_user
    assert task.requested_via == "admin"
    assert task.credentials == {"username": "root", "password": SECRET}
    assert task.events.exists()  # the service wrote the timeline's first event


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"targets": "10.9.9.9"}, "targets", "not allowed in pool"),
        ({"targets": "bad_host!"}, "targets", "is not an IP address, a CIDR network"),
        ({"scan_type": "authenticated"}, "credential_username", "scan needs credentials"),
        ({"scanner_instance": "other-1"}, "scanner_instance", "belongs to pool"),
        ({"timeout": "soon"}, "timeout", "is not a duration"),
    ],
)
def test_admin_add_shows_the_services_error_on_the_field(admin_client, overrides, field, text):
    PoolFactory(name="lab", scope=["192.0.2.0/24"])
    ScannerFactory(pool=PoolFactory(name="other"), name="other-1")
    response = admin_client.post(reverse("admin:tasks_scantask_add"), _add_task_data(**overrides))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and text in " ".join(errors[field]), errors
    assert not ScanTask.objects.exists()


# ------------------------------------------------------------------------------ actions (wiring)


def _action(admin_client, model: str, action: str, pks: list) -> str:
    response = admin_client.post(
        reverse(f"admin:{model}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )
    assert response.status_code == 200
    return " ".join(str(m) for m in response.context["messages"])


def test_task_actions_call_the_services(admin_client, redis_conn):
    queued = ScanTaskFactory(status=TaskStatus.QUEUED)
    done = ScanTaskFactory(status=TaskStatus.COMPLETED)
    failed = ScanTaskFactory(status=TaskStatus.FAILED, error_message="scanner said no")

    text = _action(admin_client, "tasks_scantask", "cancel_tasks", [queued.pk, done.pk])
    assert "Cancelled 1 task(s)" in text and "only scans pending approval, queued or running can be cancelled" in text
    queued.refresh_from_db()
    assert queued.status == TaskStatus.CANCELLED
    assert queued.events.filter(actor="admin").exists()

    text = _action(admin_client, "tasks_scantask", "retry_dead_letters", [failed.pk])
    assert "Retried 1 task(s)" in text
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (TaskStatus.QUEUED, 2)


def test_reset_breaker_action(admin_client, redis_conn):
    scanner = ScannerFactory(breaker_state=BreakerState.OPEN, consecutive_failures=5)
    text = _action(admin_client, "scanners_scanner", "reset_breaker_action", [scanner.pk])
    assert f"Circuit breaker reset (closed) for 1: {scanner.name}" in text
    scanner.refresh_from_db()
    assert (scanner.breaker_state, scanner.consecutive_failures) == (BreakerState.CLOSED, 0)


@pytest.mark.integration
def test_check_health_action_asks_the_real_emulator(admin_client, emulator):
    ready = ScannerFactory(name="emu-ok", url=emulator.urls[0], username="admin", password="admin")
    refused = ScannerFactory(name="emu-bad-login", url=emulator.urls[1], username="admin", password="wrong")
    text = _action(admin_client, "scanners_scanner", "check_health_action", [ready.pk, refused.pk])
    ready.refresh_from_db()
    refused.refresh_from_db()
    assert ready.health == Health.READY and ready.version
    assert refused.health != Health.READY
    assert "Scanner emu-ok: Ready" in text and "Scanner emu-bad-login:" in text  # capfirst keeps the names


def test_every_registered_admin_renders_its_list_and_add_pages(admin_client, admin_user):
    """Any model registered in the admin (ours, auth, tokens, results…) renders for a superuser."""
    from django.contrib import admin as django_admin
    from django.test import RequestFactory

    _populate(2)
    request = RequestFactory().get("/")
    request.user = admin_user
    for model, model_admin in django_admin.site._registry.items():
        if not model._meta.managed:  # django-rq's dashboard entry: a link to its own views, no table
            continue
        info = (model._meta.app_label, model._meta.model_name)
        response = admin_client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert response.status_code == 200, info
        if model_admin.has_add_permission(request):
            assert admin_client.get(reverse("admin:{}_{}_add".format(*info))).status_code == 200, info
        obj = model._default_manager.first()
        if obj is not None:
            response = admin_client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
            assert response.status_code == 200, info


def test_admin_index_shows_the_control_room(admin_client, django_assert_max_num_queries):
    pool = PoolFactory(name="dmz")
    ScannerFactory(pool=pool, name="dmz-1", max_concurrent_scans=2, active_scans=1)
    ScannerFactory(pool=pool, name="dmz-2", breaker_state=BreakerState.OPEN, last_error="connection refused")
    ScannerFactory(pool=pool, name="dmz-3", wait_until=timezone.now() + timezone.timedelta(minutes=2))  # Retry-After
    ScannerFactory(pool=pool, name="dmz-4", wait_until=timezone.now() - timezone.timedelta(minutes=2))  # wait over
    ScanTaskFactory.create_batch(3, pool=pool, status=TaskStatus.QUEUED)
    ScanTaskFactory(pool=pool, status=TaskStatus.FAILED, finished_at=timezone.now())
    with django_assert_max_num_queries(MAX_QUERIES):
        response = admin_client.get(reverse("admin:index"))
    body = response.content.decode()
    assert "Control room" in body
    assert "1/4 (25%)" in body  # dmz-2's open breaker and dmz-3's wait take their slots out of the usable capacity
    assert "3 queued" in body and "1 failed or timed out" in body
    assert "dmz-2" in body and "breaker open" in body and "connection refused" in body
    attention = body.split("Scanners needing attention", 1)[1].split("</ul>", 1)[0]
    assert "dmz-3" in attention and "asked to wait until" in attention  # its slots are not usable now: says why
    assert "dmz-2" in attention and "dmz-1" not in attention and "dmz-4" not in attention  # dmz-4's wait is over


@pytest.mark.parametrize("changelist", ["admin:tasks_scantask_changelist", "admin:tasks_policyrefusal_changelist"])
@pytest.mark.parametrize("query", ["?created_at__year=99999999999999999999",
                                   "?created_at__year=2026&created_at__month=99999999999999999999"])
def test_an_out_of_range_date_drill_down_is_a_bad_filter_not_a_server_error(changelist, query, admin_client):
    """Django's date hierarchy turns ValueError into "bad lookup" but lets OverflowError through (a 500 and an error
    mail for a hand-edited URL); scanpool's change lists answer it like any other bad filter (?e=1)."""
    response = admin_client.get(reverse(changelist) + query)
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")
