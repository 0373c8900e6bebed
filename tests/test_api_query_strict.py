"""Query parameters are as strict as bodies, and the schema documents every error an operation can answer.

A schema-violating query (an unknown parameter, a bad cursor or page size, an empty choice or date, events=2) is
a 400 naming the parameter, never silently served with defaults (DRF ignores a bad page size and answers a bad
cursor with 404). Every operation's schema lists the errors it can give, each with the one error body, so a
contract test or a generated client meets no undocumented status."""

from __future__ import annotations

import io
import json
import re
from io import StringIO

import pytest
from django.core.management import call_command

from tasks.api.fields import REQUIRED_TEXT_PATTERN, TEXT_PATTERN
from tasks.errors import SubmissionError
from tasks.models import ScanTask, ScanType
from tasks.results.ingest import ingest_results
from tasks.submission_rules import clean_text
from tests.api_support import OPERATE, assert_error, token_client, user_with
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory
from tests.results_support import fixture

pytestmark = pytest.mark.django_db

URL = "/api/v1/scans/"


@pytest.mark.parametrize(("query", "field"), [
    ({"stauts": "failed"}, "stauts"),  # a typo must not list every scan
    ({"cursor": ""}, "cursor"),
    ({"page_size": "abc"}, "page_size"),
    ({"page_size": "0"}, "page_size"),
    ({"page_size": "501"}, "page_size"),
    ({"page_size": ""}, "page_size"),
    ({"status": ""}, "status"),
    ({"status": "queued,bogus"}, "status"),
    ({"scan_type": ""}, "scan_type"),
    ({"authentication_status": ""}, "authentication_status"),
    ({"created_after": ""}, "created_after"),
    ({"created_before": ""}, "created_before"),
])
def test_list_refuses_bad_query_parameters_naming_them(api, pool, query, field):
    error = assert_error(api.get(URL, query), 400, field=field)
    assert field in error["message"]


def test_a_cursor_the_list_did_not_give_is_a_404_naming_it(api, pool):
    assert_error(api.get(URL, {"cursor": "not-a-cursor"}), 404, field="cursor")


def test_list_accepts_what_its_schema_allows(api, pool):
    ScanTaskFactory(pool=pool, status="failed")
    ScanTaskFactory(pool=pool, status="queued")
    ScanTaskFactory(pool=pool, status="completed")
    page = api.get(URL, {"status": "queued,failed", "page_size": "500", "pool": "", "format": "json"})
    assert page.status_code == 200, page.content
    assert sorted(t["status"] for t in page.json()["results"]) == ["failed", "queued"]
    first = api.get(URL, {"page_size": "1"}).json()
    assert len(first["results"]) == 1 and first["next"]
    assert api.get(first["next"]).status_code == 200  # the cursor it gave is accepted


def test_status_read_takes_events_0_or_1_only_and_changes_nothing_when_refused(api, pool):
    task = ScanTaskFactory(pool=pool)
    assert api.get(f"{URL}{task.pk}/", {"events": "0"}).json()["events"] is None
    assert isinstance(api.get(f"{URL}{task.pk}/", {"events": "1"}).json()["events"], list)
    ScanTask.objects.filter(pk=task.pk).update(last_accessed_at=None)
    for query, field in (({"events": "2"}, "events"), ({"events": ""}, "events"), ({"evnts": "0"}, "evnts")):
        assert_error(api.get(f"{URL}{task.pk}/", query), 400, field=field)
    assert ScanTask.objects.get(pk=task.pk).last_accessed_at is None  # a refused read is no access


@pytest.fixture
def done(pool):
    task = ScanTaskFactory(pool=pool, scan_type=ScanType.AUTHENTICATED, status="completed")
    ingest_results(task.id, fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus"))
    return task


@pytest.mark.parametrize(("path", "query", "field"), [
    ("results", {"page_size": ""}, "page_size"),
    ("results", {"page": ""}, "page"),
    ("results", {"group": ""}, "group"),
    ("results", {"format": ""}, "format"),
    ("results", {"profile": ""}, "profile"),
    ("hosts", {"page_size": ""}, "page_size"),
    ("hosts", {"page": "0"}, "page"),
    ("hosts", {"pge": "2"}, "pge"),
])
def test_results_refuse_empty_and_unknown_parameters(api, done, path, query, field):
    assert_error(api.get(f"{URL}{done.pk}/{path}/", query), 400, field=field)


def test_results_pages_still_answer(api, done):
    assert api.get(f"{URL}{done.pk}/results/", {"page_size": "5", "severity": ">=2"}).status_code == 200
    assert api.get(f"{URL}{done.pk}/hosts/", {"page": "1"}).status_code == 200


def test_an_unknown_body_field_is_named_in_the_message(api, pool):
    error = assert_error(api.post(URL, {"name": "x", "targets": "192.0.2.1", "scanner_pool": "pool", "colour": 1},
                                  format="json"), 400, field="colour")
    assert "'colour'" in error["message"]


def test_every_operation_documents_its_errors_with_the_error_body():
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", "--validate", stdout=out)
    schema = json.loads(out.getvalue())
    error_ref = "#/components/schemas/Error"
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = schema["components"]["schemas"][error["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["properties"]) == {"code", "message", "field", "details"}
    assert set(detail["required"]) == {"code", "message"}
    seen = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"401", "403", "429"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if method == "post" or any(p["in"] == "query" for p in operation.get("parameters", [])):
                assert "400" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith("4"):
                    assert response["content"]["application/json"]["schema"] == {"$ref": error_ref}, (
                        method, path, status)
                    assert response["description"], (method, path, status)
                    seen += 1
    assert seen > 80


@pytest.mark.parametrize("value", [",", "success,", "success, failed", " "])
def test_a_list_of_choices_with_an_empty_or_padded_item_is_refused(api, pool, value):
    assert_error(api.get(URL, {"authentication_status": value}), 400, field="authentication_status")


@pytest.mark.parametrize(("query", "accept", "status"), [
    ({"format": "csv"}, None, 409), ({"format": "ndjson"}, None, 409), ({}, "application/x-ndjson", 409),
])
def test_a_results_error_is_json_whatever_format_was_asked(api, pool, query, accept, status):
    task = ScanTaskFactory(pool=pool, status="queued")
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.get(f"{URL}{task.pk}/results/", query, **headers)
    assert response["Content-Type"] == "application/json"
    assert_error(response, status)
    missing = api.get(f"{URL}00000000-0000-0000-0000-000000000000/results/", {"format": "csv"})
    assert missing["Content-Type"] == "application/json"
    assert_error(missing, 404, field="task_id")


def test_a_csv_request_refused_for_its_parameters_is_answered_in_json(api, done):
    response = api.get(f"{URL}{done.pk}/results/", {"format": "csv", "group": "plugin"})
    assert response["Content-Type"] == "application/json"
    assert_error(response, 400, field="group")
    assert api.get(f"{URL}{done.pk}/results/", {"format": "csv"})["Content-Type"].startswith("text/csv")


@pytest.mark.parametrize("query", [{"format": "csv"}, {"group": "plugin"}])
def test_an_unknown_profile_is_refused_even_where_the_profile_is_unused(api, done, query):
    response = api.get(f"{URL}{done.pk}/results/", {**query, "profile": "everything"})
    assert response["Content-Type"] == "application/json"
    assert_error(response, 400, field="profile")


def test_a_parameter_given_twice_is_refused_not_last_one_wins(api, pool):
    error = assert_error(api.get(f"{URL}?status=queued&status=failed"), 400, field="status")
    assert "comma-separated" in error["message"]


def test_validate_without_a_body_is_a_400_naming_the_file_not_a_500(api):
    # No Content-Type and no body: DRF's request.data is a plain dict then, not a form.
    assert_error(api.generic("POST", "/api/v1/validate/"), 400, field="file")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/scans/%C2%84/", "/api/v1/pools/a%20b/", "/api/v1/nothing/",
                                  "/api/v1/pools/%C2%B9%0A./",
                                  "/api/v1/scans/%C2%84/cancel/"])
def test_an_unknown_api_path_is_a_json_404_with_debug_on_or_off(api, settings, debug, path):
    settings.DEBUG = debug  # with DEBUG, Django answers an unresolved path with its HTML page, not handler404
    api.handler.enforce_csrf_checks = True  # as a real client meets it (a token client sends no CSRF token)
    response = api.post(path, {}, format="json") if path.endswith("cancel/") else api.get(path)
    assert response["Content-Type"] == "application/json"
    assert_error(response, 404, code="not_found")


def test_an_endpoint_without_its_slash_redirects_a_get_and_explains_a_post(api, pool):
    response = api.get("/api/v1/scans?status=queued")
    assert response.status_code == 301 and response["Location"] == "/api/v1/scans/?status=queued"
    error = assert_error(api.post("/api/v1/scans", {}, format="json"), 404)
    assert "/api/v1/scans/" in error["message"]
    assert not ScanTask.objects.exists()


def test_the_schema_says_strict_bodies_refuse_unknown_fields():
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    schemas = json.loads(out.getvalue())["components"]["schemas"]
    for name in ("ScanCreateRequest", "CredentialsRequest", "ReasonRequest", "RejectRequest", "ValidateRequestRequest"):
        assert schemas[name]["additionalProperties"] is False, name


@pytest.mark.parametrize("text", ["a", "  ", "", " a ", "a\x00", "a\tb\r\nc", "\x01a", "a\x7f", "\u00e9t\u00e9",
                                  "\x0b"])
def test_the_schema_patterns_of_submitted_text_agree_with_the_service(text):
    for pattern, required in ((TEXT_PATTERN, False), (REQUIRED_TEXT_PATTERN, True)):
        try:
            clean_text("name", text, max_length=200, required=required)
            accepted = True
        except SubmissionError:
            accepted = False
        # JSON Schema patterns are ECMA regexes; these (\uXXXX ranges, \s) read the same in Python.
        assert bool(re.search(pattern, text)) == accepted, (pattern, text)


def test_list_choice_parameters_are_documented_as_non_empty_comma_separated_arrays():
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    parameters = json.loads(out.getvalue())["paths"]["/api/v1/scans/"]["get"]["parameters"]
    by_name = {p["name"]: p for p in parameters}
    for name in ("status", "scan_type", "authentication_status"):
        assert by_name[name]["schema"]["minItems"] == 1 and by_name[name]["explode"] is False, name
    assert by_name["cursor"]["schema"]["minLength"] == 1
    assert (by_name["page_size"]["schema"]["minimum"], by_name["page_size"]["schema"]["maximum"]) == (1, 500)


@pytest.mark.parametrize("verdict", ["", "success,", "nonsense", "success, failed"])
def test_hosts_verdicts_are_a_strict_comma_separated_list(api, done, verdict):
    assert_error(api.get(f"{URL}{done.pk}/hosts/", {"verdict": verdict}), 400, field="verdict")


def test_hosts_verdicts_filter(api, done):
    page = api.get(f"{URL}{done.pk}/hosts/", {"verdict": "success,failed,partial"})
    assert page.status_code == 200
    hosts = page.json()["results"]
    assert hosts and {h["auth"]["verdict"] for h in hosts} <= {"success", "failed", "partial"}


def test_a_blank_reject_reason_is_refused_and_the_schema_says_so(api, pool):
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    pattern = json.loads(out.getvalue())["components"]["schemas"]["RejectRequest"]["properties"]["reason"]["pattern"]
    assert not re.search(pattern, "  ") and re.search(pattern, " no ")


@pytest.mark.parametrize(("path", "query"), [
    ("/api/v1/", "x=1"), ("/api/v1/pools/", "foo=1"), ("/api/v1/pools/{pool}/", "foo=1"),
    ("/api/v1/scanners/", "stauts=x"), ("/api/v1/scanners/{scanner}/", "pool=x"),
    ("/api/v1/scans/{task}/results.nessus", "x=1"),
])
def test_every_endpoint_refuses_query_parameters_it_does_not_know(api, pool, path, query):
    scanner = pool.scanners.first()
    task = ScanTaskFactory(pool=pool)
    url = path.format(pool=pool.name, scanner=scanner.name, task=task.pk)
    name = query.split("=")[0]
    error = assert_error(api.get(f"{url}?{query}"), 400, code="invalid", field=name)
    assert f"unknown query parameter {name!r}" in error["message"]


def test_scanners_list_by_pool(api, pool):
    other = PoolFactory(name="other-zone", scope=["198.51.100.0/24"])
    ScannerFactory(pool=other, name="elsewhere")
    names = {s["name"] for s in api.get(f"/api/v1/scanners/?pool={pool.name}").json()}
    assert names == {s.name for s in pool.scanners.all()} and "elsewhere" not in names
    assert api.get("/api/v1/scanners/?pool=no-such-pool").json() == []
    assert_error(api.get(f"/api/v1/scanners/?pool={pool.name}&pool=other-zone"), 400, field="pool")


@pytest.mark.parametrize("path", ["/api/v1/scans/?format=csv", "/api/v1/pools/?format=xml",
                                  "/api/v1/scans/{task}/?format=ndjson", "/api/v1/scans/{task}/hosts/?format=csv"])
def test_an_unknown_format_is_a_400_naming_format_not_a_404(api, pool, path):
    task = ScanTaskFactory(pool=pool)
    error = assert_error(api.get(path.format(task=task.pk)), 400, code="invalid_choice", field="format")
    assert "json" in error["message"]


def test_null_values_get_a_documented_code(api, pool):
    for field in ("name", "targets", "description", "scan_type"):
        body = {"name": "n", "targets": ["192.0.2.1"], "scanner_pool": pool.name, field: None}
        assert_error(api.post("/api/v1/scans/", body, format="json"), 400, code="invalid_type", field=field)


@pytest.mark.parametrize("position", ["p=2026", "p=2026-13-45 00:00:00", "p=x&r=1", "o=5&p=not-a-time"])
def test_a_crafted_cursor_is_a_404_naming_cursor_not_a_500(api, pool, position):
    import base64

    ScanTaskFactory(pool=pool)
    cursor = base64.b64encode(position.encode()).decode()
    assert_error(api.get(f"/api/v1/scans/?cursor={cursor}"), 404, code="not_found", field="cursor")


@pytest.mark.parametrize(("path", "query"), [
    ("/api/v1/scans/", {"pool": "dmz\x00"}),
    ("/api/v1/scans/", {"scanner": "dmz-1\x00"}),
    ("/api/v1/scanners/", {"pool": "dmz\x00"}),
    ("results", {"q": "\x00"}),
    ("results", {"host": "192.0.2.1\x00"}),
    ("results", {"plugin_family": "General\x00"}),
])
def test_a_nul_character_in_a_query_value_is_a_400_naming_the_parameter(api, done, path, query):
    # PostgreSQL refuses NUL in a text lookup (a 500); SQLite cut the text at it (q=%00 matched every finding).
    url = f"{URL}{done.pk}/{path}/" if path == "results" else path
    name = next(iter(query))
    assert_error(api.get(url, query), 400, code="null_characters_not_allowed", field=name)


def test_writes_refuse_query_parameters_too(api, pool):
    # ?idempotency_key=… on a submission was ignored: each retry of the client made another scan.
    body = {"name": "n", "targets": "192.0.2.1", "scanner_pool": "dmz"}
    error = assert_error(api.post(f"{URL}?idempotency_key=k", body, format="json"), 400, field="idempotency_key")
    assert "send its input in the body" in error["message"]  # where idempotency_key goes instead
    assert not ScanTask.objects.exists()
    task = ScanTaskFactory(pool=pool, status="queued")
    approver, _ = token_client(user_with([*OPERATE, "tasks.approve_scantask"], "approver"))
    for action in ("cancel", "retry", "approve", "reject"):
        assert_error(approver.post(f"{URL}{task.pk}/{action}/?reason=x", {}, format="json"), 400, field="reason")
    assert ScanTask.objects.get(pk=task.pk).status == "queued"
    upload = io.BytesIO(b"<NessusClientData_v2/>")
    upload.name = "scan.nessus"
    assert_error(api.post("/api/v1/validate/?scan_type=authenticated", {"file": upload}, format="multipart"), 400,
                 field="scan_type")
    assert api.post(f"{URL}?format=json", body, format="json").status_code == 202  # format stays accepted


@pytest.mark.parametrize(("query", "field"), [
    ({"format": "csv", "page": "abc"}, "page"),
    ({"format": "csv", "page_size": "99999"}, "page_size"),
    ({"format": "ndjson", "page": "0"}, "page"),
    ({"format": "ndjson", "ordering": "bogus"}, "ordering"),
    ({"group": "plugin", "ordering": "bogus"}, "ordering"),
    ({"group": "plugin", "profile": "everything"}, "profile"),
])
def test_results_refuse_a_bad_control_parameter_also_where_it_is_unused(api, done, query, field):
    # A stream has no pages and plugin groups their own order: a wrong value there was silently ignored (200).
    response = api.get(f"{URL}{done.pk}/results/", query)
    assert_error(response, 400, code="invalid_filter", field=field)
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("name", ["plugin_family", "cve", "host", "port", "plugin_id", "severity"])
def test_a_list_filter_takes_at_most_200_values(api, done, name):
    # Each value is a term of the query: 1100 plugin families (a 4 KiB URL) were a 500 on SQLite (OR tree deeper
    # than 1000), and so were as many CVEs.
    values = {"plugin_family": "F{}", "cve": "CVE-2020-{}", "host": "h{}", "port": "{}", "plugin_id": "{}",
              "severity": "1"}[name]
    many = ",".join(values.format(1000 + i) for i in range(1100))
    error = assert_error(api.get(f"{URL}{done.pk}/results/", {name: many}), 400, code="invalid_filter", field=name)
    assert "at most 200" in error["message"]
    ok = ",".join(values.format(1000 + i) for i in range(200))
    assert api.get(f"{URL}{done.pk}/results/", {name: ok}).status_code == 200


def test_the_schema_refuses_an_unknown_query_parameter_too(api):
    response = api.get("/api/schema/", {"formt": "json"})  # a typo was answered with the YAML schema
    assert_error(response, 400, field="formt")
    assert response["Content-Type"] == "application/json"
    assert api.get("/api/schema/", {"format": "json", "lang": "en"}).status_code == 200
