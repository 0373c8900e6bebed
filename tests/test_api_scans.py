"""POST/GET /api/v1/scans/: submit (every 4xx names the field and creates nothing), idempotency, status,
cancel, retry. The submission service is the real one; no worker is needed (nothing is dispatched in a
rolled-back test transaction)."""

from __future__ import annotations

import pytest

from pools.models import Pool
from tasks.models import ScanTask, TaskStatus, TaskTarget
from tests.api_support import SUBMIT, assert_error
from tests.factories import PoolFactory, ScannerFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/scans/"


def body(**overrides):
    data = {"name": "weekly", "targets": ["192.0.2.10"], "scanner_pool": "dmz"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def test_submit_answers_202_with_position_wait_and_links(api, pool, operator):
    response = api.post(URL, body(targets="192.0.2.10, 192.0.2.0/28\nhost.example.com"), format="json")
    assert response.status_code == 202, response.content
    data = response.json()
    task = ScanTask.objects.get(pk=data["task_id"])
    assert task.requested_by == operator and task.requested_via == "api"
    assert task.api_token.name == "test" and data["api_client"] == "test"
    assert task.targets == ["192.0.2.10", "192.0.2.0/28", "host.example.com"]
    assert data["status"] == "queued" and data["scanner_pool"] == "dmz" and data["trace_id"] == str(task.trace_id)
    assert data["queue_position"] == 0 and "estimated_wait_seconds" in data
    assert data["estimated_wait_basis"]["method"]
    assert data["links"]["status"].endswith(f"/api/v1/scans/{task.pk}/")
    assert data["links"]["results"].endswith(f"/api/v1/scans/{task.pk}/results/")
    assert response["Location"] == data["links"]["status"]
    # the links are built from the status URL: each is what reverse() gives for its route, and each answers
    from django.urls import reverse

    names = {"status": "api:scan-detail", "results": "api:scan-results", "hosts": "api:scan-hosts",
             "raw": "api:scan-raw"}
    assert data["links"] == {k: f"http://testserver{reverse(n, args=[task.pk])}" for k, n in names.items()}
    assert api.get(data["links"]["hosts"]).status_code == 409  # no results yet: the route exists and says so
    assert data["scanner_instance"] is None and data["scanner_url"] is None
    assert TaskTarget.objects.filter(task=task).count() == 3


def test_pinned_scanner_gives_its_real_url(api, pool):
    data = api.post(URL, body(scanner_instance="dmz-2"), format="json").json()
    assert data["scanner_instance"] == "dmz-2" and data["scanner_url"] == "https://dmz-2.example.net:8834"


def test_default_pool_is_the_only_pool_or_the_setting(api, pool, settings):
    assert api.post(URL, body(scanner_pool=...), format="json").status_code == 202
    PoolFactory(name="other", scope=["192.0.2.0/24"])
    assert_error(api.post(URL, body(scanner_pool=...), format="json"), 400, code="required", field="scanner_pool")
    settings.SCANPOOL_DEFAULT_POOL = "other"
    assert api.post(URL, body(scanner_pool=...), format="json").json()["scanner_pool"] == "other"


BAD = [
    # (body overrides, status, code, field)
    ({"targets": []}, 400, "invalid", "targets"),
    ({"targets": ""}, 400, "invalid", "targets"),
    ({"targets": ["192.0.2.10;rm -rf /"]}, 400, "invalid", "targets"),
    ({"targets": ["192.0.2.10 198.51.100.1"]}, 400, "invalid", "targets"),  # one entry smuggling another
    ({"targets": ["http://192.0.2.10/"]}, 400, "invalid", "targets"),
    ({"targets": ["10.0.0.1"]}, 403, "out_of_scope", "targets"),
    ({"targets": [f"192.0.2.{i % 250}" for i in range(1001)]}, 400, "invalid", "targets"),
    ({"targets": ["192.0.0.0/8"]}, 400, "invalid", "targets"),  # more addresses than SCANPOOL_MAX_TARGET_ADDRESSES
    ({"targets": 5}, 400, "invalid_type", "targets"),
    ({"targets": [5]}, 400, "invalid_type", "targets"),
    ({"scanner_pool": "nope"}, 404, "not_found", "scanner_pool"),
    ({"scanner_pool": 7}, 400, "invalid_type", "scanner_pool"),
    ({"scanner_instance": "ghost"}, 404, "not_found", "scanner_instance"),
    ({"scanner_instance": "elsewhere-1"}, 400, "invalid", "scanner_instance"),
    ({"scan_type": "authenticated"}, 400, "required", "credentials"),
    ({"scan_type": "root"}, 400, "invalid_choice", "scan_type"),
    ({"scan_type": "authenticated_privileged",
      "credentials": {"username": "u", "password": "p", "elevate_privileges_with": "doas"}},
     400, "invalid", "credentials.elevate_privileges_with"),
    ({"credentials": {"username": "u", "password": "p"}}, 400, "invalid", "credentials"),
    ({"scan_type": "authenticated", "credentials": {"username": "u", "password": "p", "token": "x"}},
     400, "unknown_field", "credentials.token"),
    ({"scan_type": "authenticated", "credentials": "user:pass"}, 400, "invalid", "credentials"),
    ({"name": ""}, 400, "required", "name"),
    ({"name": 123}, 400, "invalid_type", "name"),
    ({"name": "x" * 201}, 400, "max_length", "name"),
    ({"name": "a\x00b"}, 400, "null_characters_not_allowed", "name"),
    ({"timeout_seconds": "3600"}, 400, "invalid_type", "timeout_seconds"),
    ({"timeout_seconds": 5}, 400, "invalid", "timeout_seconds"),
    ({"timeout_seconds": True}, 400, "invalid_type", "timeout_seconds"),
    ({"priority": "high"}, 400, "unknown_field", "priority"),
    ({"name": ...}, 400, "required", "name"),
]


@pytest.mark.parametrize(("overrides", "status", "code", "field"), BAD)
def test_bad_submissions_name_the_field_and_create_nothing(api, pool, overrides, status, code, field):
    ScannerFactory(pool=PoolFactory(name="elsewhere", scope=["192.0.2.0/24"]), name="elsewhere-1")
    error = assert_error(api.post(URL, body(**overrides), format="json"), status, code=code, field=field)
    assert field in error["message"]
    assert ScanTask.objects.count() == 0 and TaskTarget.objects.count() == 0


def test_malformed_and_non_object_bodies(api, pool):
    assert_error(api.post(URL, "{not json", content_type="application/json"), 400, code="malformed_request")
    assert_error(api.post(URL, [1, 2], format="json"), 400, code="invalid")
    error = assert_error(api.post(URL, "name=x", content_type="application/x-www-form-urlencoded"), 415,
                         code="unsupported_media_type")
    # curl's -d without -H sends form data: the message says which header to add.
    assert "Content-Type: application/json" in error["message"]
    assert ScanTask.objects.count() == 0


def test_pool_full_is_429_with_retry_after(api, pool):
    Pool.objects.filter(pk=pool.pk).update(max_queued=1)
    assert api.post(URL, body(), format="json").status_code == 202
    response = api.post(URL, body(name="second"), format="json")
    error = assert_error(response, 429, code="pool_full", field="scanner_pool")
    assert int(response["Retry-After"]) >= 1 and error["details"]["retry_after"] == int(response["Retry-After"])
    assert ScanTask.objects.count() == 1


def test_idempotency_by_body_key_and_header(api, pool):
    first = api.post(URL, body(idempotency_key="k-1"), format="json")
    again = api.post(URL, body(idempotency_key="k-1"), format="json")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    assert_error(api.post(URL, body(idempotency_key="k-1", name="other"), format="json"), 409,
                 code="idempotency_conflict", field="idempotency_key")
    by_header = api.post(URL, body(), format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert by_header.status_code == 202
    assert api.post(URL, body(), format="json", HTTP_IDEMPOTENCY_KEY="k-2").json()["task_id"] == \
        by_header.json()["task_id"]
    assert_error(api.post(URL, body(idempotency_key="a"), format="json", HTTP_IDEMPOTENCY_KEY="b"), 400,
                 field="idempotency_key")
    assert ScanTask.objects.count() == 2


def test_an_idempotency_key_of_the_documented_200_characters_is_accepted(api, pool):
    # The API stores the key as "api:<user id>:<key>": a key of 195 characters was refused as "201 characters long".
    for length in (195, 200):
        first = api.post(URL, body(idempotency_key="k" * length), format="json")
        assert first.status_code == 202, first.content
        again = api.post(URL, body(), format="json", HTTP_IDEMPOTENCY_KEY="k" * length)
        assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"]
    assert_error(api.post(URL, body(idempotency_key="k" * 201), format="json"), 400, code="max_length",
                 field="idempotency_key")
    error = assert_error(api.post(URL, body(), format="json", HTTP_IDEMPOTENCY_KEY="h" * 300), 400,
                         code="max_length", field="idempotency_key")
    assert "Idempotency-Key header is 300 characters long" in error["message"]
    assert ScanTask.objects.count() == 2


def test_idempotency_keys_are_per_client(api, pool):
    from tests.api_support import token_client, user_with

    mine = api.post(URL, body(idempotency_key="shared"), format="json").json()["task_id"]
    other, _ = token_client(user_with(SUBMIT, "someone-else"))
    theirs = other.post(URL, body(idempotency_key="shared", name="theirs"), format="json")
    assert theirs.status_code == 202 and theirs.json()["task_id"] != mine


def test_status_has_timeline_and_marks_access(api, pool):
    task_id = api.post(URL, body(), format="json").json()["task_id"]
    assert ScanTask.objects.get(pk=task_id).last_accessed_at is None
    data = api.get(f"{URL}{task_id}/").json()
    assert data["events"] and data["events"][0]["message"].startswith("submitted to pool dmz")
    assert data["requested_by"] == "operator" and data["requested_via"] == "api"
    first_access = ScanTask.objects.get(pk=task_id).last_accessed_at
    assert first_access is not None
    api.get(f"{URL}{task_id}/")  # within a minute: no new write
    assert ScanTask.objects.get(pk=task_id).last_accessed_at == first_access
    assert api.get(f"{URL}{task_id}/?events=0").json()["events"] is None
    assert_error(api.get(f"{URL}00000000-0000-0000-0000-000000000000/"), 404, code="not_found", field="task_id")
    assert_error(api.get(f"{URL}not-a-uuid/"), 404, code="not_found")
    # 32-36 hex-ish characters reach the view but are no UUID (found by schemathesis: was a 500)
    assert_error(api.get(f"{URL}Ad6FFa8Edb8D9B8314ecAdacF56C4ABB-7B3/"), 404, code="not_found", field="task_id")
    assert_error(api.get(f"{URL}Ad6FFa8Edb8D9B8314ecAdacF56C4ABB-7B3/results/"), 404, code="not_found")


def test_cancel_and_retry(api, pool):
    task_id = api.post(URL, body(), format="json").json()["task_id"]
    response = api.post(f"{URL}{task_id}/cancel/", format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert_error(api.post(f"{URL}{task_id}/cancel/", format="json"), 409, code="invalid_state")
    assert_error(api.post(f"{URL}{task_id}/retry/", format="json"), 409, code="invalid_state")
    ScanTask.objects.filter(pk=task_id).update(status=TaskStatus.FAILED, error_message="boom")
    response = api.post(f"{URL}{task_id}/retry/", format="json")
    assert response.status_code == 200 and response.json()["status"] == "queued" and response.json()["attempts"] == 2
    assert_error(api.post(f"{URL}{task_id}/cancel/", {"why": "x"}, format="json"), 400, code="unknown_field")


def test_the_reason_of_a_cancel_or_retry_is_kept_in_the_timeline(api, pool):
    # It was validated and then dropped: nothing recorded why (the MCP tool says "kept in the task's timeline").
    task_id = api.post(URL, body(), format="json").json()["task_id"]
    assert api.post(f"{URL}{task_id}/cancel/", {"reason": "wrong targets"}, format="json").status_code == 200
    ScanTask.objects.filter(pk=task_id).update(status=TaskStatus.FAILED)
    assert api.post(f"{URL}{task_id}/retry/", {"reason": "scanner fixed"}, format="json").status_code == 200
    messages = [e["message"] for e in api.get(f"{URL}{task_id}/").json()["events"]]
    assert any(m.startswith("cancelled by ") and m.endswith(": wrong targets") for m in messages), messages
    assert any(m.startswith("retry requested by ") and m.endswith(": scanner fixed") for m in messages), messages


def test_list_filters_newest_first_and_cidr_aware_target(api, pool):
    ids = {}
    for name, targets, scan_type in [("a", ["192.0.2.0/24"], "untrusted"), ("b", ["198.51.100.7"], "untrusted"),
                                     ("c", ["192.0.2.5-192.0.2.9", "www.example.com"], "untrusted")]:
        response = api.post(URL, body(name=name, targets=targets, scan_type=scan_type), format="json")
        ids[name] = response.json()["task_id"]
    names = lambda r: [t["name"] for t in r.json()["results"]]  # noqa: E731
    assert names(api.get(URL)) == ["c", "b", "a"]
    assert names(api.get(URL, {"target": "192.0.2.7"})) == ["c", "a"]
    assert names(api.get(URL, {"target": "192.0.2.200"})) == ["a"]
    assert names(api.get(URL, {"target": "198.51.100.0/29"})) == ["b"]
    assert names(api.get(URL, {"target": "www.example.com"})) == ["c"]
    assert names(api.get(URL, {"target": "2001:db8::1"})) == []
    assert_error(api.get(URL, {"target": "not a target!"}), 400, field="target")
    ScanTask.objects.filter(pk=ids["b"]).update(status=TaskStatus.COMPLETED, auth_status="not_applicable")
    assert names(api.get(URL, {"status": "completed"})) == ["b"]
    assert names(api.get(URL, {"status": "queued,completed", "pool": "dmz"})) == ["c", "b", "a"]
    assert names(api.get(URL, {"authentication_status": "not_applicable"})) == ["b"]
    assert names(api.get(URL, {"created_after": "2000-01-01T00:00:00Z", "scan_type": "untrusted"})) == ["c", "b", "a"]
    assert names(api.get(URL, {"created_before": "2000-01-01T00:00:00Z"})) == []
    assert_error(api.get(URL, {"status": "done"}), 400, field="status")
    assert_error(api.get(URL, {"created_after": "yesterday"}), 400, field="created_after")
    # Offsets are compared in UTC, whatever the database accepts (PostgreSQL refuses beyond ±15:59); a naive
    # time is the server's time zone; a well-formed impossible date or one out of range is a 400, never a 500.
    assert names(api.get(URL, {"created_after": "2000-01-01T00:00:00-16:56"})) == ["c", "b", "a"]
    assert names(api.get(URL, {"created_before": "2000-01-01T00:00:00+23:59"})) == []
    assert names(api.get(URL, {"created_after": "2000-01-01T00:00:00"})) == ["c", "b", "a"]
    for bad in ["2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z", "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59-01:00"]:
        assert_error(api.get(URL, {"created_before": bad}), 400, field="created_before")
    page = api.get(URL, {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    rest = api.get(page["next"]).json()
    assert [t["name"] for t in rest["results"]] == ["a"]


@pytest.mark.parametrize("rows", [1, 50])
def test_list_runs_a_bounded_number_of_queries(api, pool, django_assert_max_num_queries, rows):
    from tests.factories import ScanTaskFactory

    pinned = pool.scanners.first()
    ScanTaskFactory.create_batch(rows, pool=pool, requested_scanner=pinned, assigned_scanner=pinned)
    with django_assert_max_num_queries(6):  # token, touch, count-free cursor page, … — never one per row
        response = api.get(URL, {"page_size": 100})
    assert len(response.json()["results"]) == rows
