"""A submission stays cheap (issue #9's throughput goal) without going wrong: the answer's document is what DRF's
own field walk gives for every kind of task, the client's policy comes with the submission's token check in its
transaction, the scanners' addresses with the pool read, and the dispatch request is one Redis command that survives
a lost script cache. Real database, real Redis, the real views; nothing mocked."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIRequestFactory

from pools.models import Pool
from pools.scope import parse_target
from scanners.scope import pool_scope, pool_with_scanner_urls, scanner_hosts
from tasks import services
from tasks.api.serializers import ScanDetailSerializer, ScanListSerializer
from tasks.engine import dispatch
from tasks.errors import ScopeError, SubmissionError
from tasks.models import ApiToken, ApprovalRule, AuthStatus, ClientPolicy, ErrorKind, ScanTask, TaskStatus
from tests.api_support import SUBMIT, assert_error, token_client, user_with
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/scans/"
BODY = {"name": "quick", "targets": ["192.0.2.10", "192.0.2.0/28"], "scanner_pool": "dmz"}


def _rendered(document) -> dict:
    return json.loads(JSONRenderer().render(document))


def _tasks_of_every_kind(pool) -> list[ScanTask]:
    dmz1, dmz2 = pool.scanners.order_by("name")
    now = timezone.now()
    made = [
        ScanTaskFactory(pool=pool),  # queued, unpinned
        ScanTaskFactory(pool=pool, requested_scanner=dmz2, description="pinned"),
        ScanTaskFactory(pool=pool, status=TaskStatus.RUNNING, assigned_scanner=dmz1, progress=40, claimed_at=now,
                        started_at=now, scanner_status="running", warnings=["slow host"], slot_held=True),
        ScanTaskFactory(pool=pool, status=TaskStatus.COMPLETED, assigned_scanner=dmz1, progress=100, started_at=now,
                        finished_at=now, auth_status=AuthStatus.SUCCESS, results_summary={"hosts": 2, "critical": 1},
                        validation={"hosts": []}, results_file="x/results.nessus", results_size=1234,
                        results_sha256="ab" * 32, troubleshooting=["none"]),
        ScanTaskFactory(pool=pool, status=TaskStatus.FAILED, error_kind=ErrorKind.SCAN,
                        error_message="the scanner said no", finished_at=now, attempts=2),
        ScanTaskFactory(pool=pool, status=TaskStatus.PENDING_APPROVAL, approval_reason="outside the list",
                        approval_expires_at=now + timezone.timedelta(hours=1), name="ünïcode « name »"),
        ScanTaskFactory(pool=pool, status=TaskStatus.CANCELLED, approval_reason="r", approval_decided_by="alice",
                        approval_decided_at=now, finished_at=now, deadline_at=now, last_accessed_at=now),
    ]
    return list(ScanTask.objects.select_related("pool", "assigned_scanner", "requested_scanner", "requested_by",
                                                "api_token").filter(pk__in=[t.pk for t in made]))


@pytest.mark.parametrize("with_request", [True, False])
def test_the_planned_document_is_drfs_own_for_every_kind_of_task(pool, fresh_throttle_counts, settings,
                                                                  with_request):
    settings.ALLOWED_HOSTS = ["scanpool.example.org"]
    tasks = _tasks_of_every_kind(pool)
    request = APIRequestFactory().get(URL, SERVER_NAME="scanpool.example.org") if with_request else None
    for serializer_class in (ScanDetailSerializer, ScanListSerializer):
        for task in tasks:
            context = {"request": request, "events": True}
            planned = serializer_class(task, context=context).data
            generic = serializer_class(task, context={"request": request, "events": True}).generic_representation(task)
            assert _rendered(planned) == _rendered(generic), (serializer_class.__name__, task.status)
            assert list(planned) == list(generic)  # same keys, same order
        # A page: one context (and one base URL) for every row.
        page = serializer_class(tasks, many=True, context={"request": request}).data
        assert _rendered(page) == _rendered([serializer_class(t, context={"request": request}).generic_representation(t)
                                             for t in tasks])
    if with_request:
        links = ScanListSerializer(tasks[0], context={"request": request}).data["links"]
        assert links["status"] == f"http://scanpool.example.org{URL}{tasks[0].pk}/"
        assert links["raw"] == links["status"] + "results.nessus"


def test_a_field_the_plan_does_not_know_is_refused_when_the_class_is_used():
    class WithFile(ScanListSerializer):
        results_file = serializers.FileField(read_only=True)

        class Meta(ScanListSerializer.Meta):
            fields = [*ScanListSerializer.Meta.fields, "results_file"]

    with pytest.raises(TypeError, match=r"WithFile\.results_file: FileField"):
        WithFile(ScanTask(), context={}).data  # noqa: B018


def _policy_queries(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if 'FROM "tasks_clientpolicy"' in q["sql"]]


def test_a_submission_by_a_client_without_a_policy_reads_no_policy(api, pool):
    api.post(URL, {**BODY, "name": "warm"}, format="json")  # the token's last-used time is written once a minute
    with CaptureQueriesContext(connection) as queries:
        response = api.post(URL, BODY, format="json")
    assert response.status_code == 202, response.content
    assert _policy_queries(queries) == []
    statements = [q["sql"] for q in queries.captured_queries]
    # token, the user's and the group's permissions, the pool with the scanners' addresses, then the
    # transaction: the token again (not revoked since, its row locked; saying whether there is a policy), task,
    # target index, event.
    assert not any('FROM "scanners_scanner"' in sql and 'FROM "pools_pool"' not in sql for sql in statements)
    assert sum(sql.startswith(("SELECT", "INSERT")) for sql in statements) == 8, statements
    (recheck,) = [sql for sql in statements if sql.startswith("SELECT") and 'FROM "tasks_apitoken"' in sql
                  and '"revoked_at" IS NULL' in sql and "auth_user" not in sql]
    assert '"tasks_clientpolicy"' in recheck  # the policy's id (none here) comes with it
    if connection.vendor == "postgresql":
        assert recheck.endswith("FOR NO KEY UPDATE OF t"), recheck  # a revocation waits for this submission


def test_a_policy_is_still_read_and_enforced_and_a_new_one_applies_at_once(pool, fresh_throttle_counts):
    _token, _policy, client = policy_client("agent", pools=[pool], scan_types=["untrusted"])
    with CaptureQueriesContext(connection) as queries:
        response = client.post(URL, BODY, format="json")
    assert response.status_code == 202, response.content
    assert _policy_queries(queries)  # read and checked
    refused = client.post(URL, {**BODY, "scan_type": "authenticated", "credentials": {
        "username": "u", "password": "p"}}, format="json")
    assert_error(refused, 403, field="scan_type")

    # A policy given to a client that had none applies to its very next submission (nothing cached).
    free, _ = token_client(user_with(SUBMIT, "free"), name="free")
    assert free.post(URL, {**BODY, "name": "before"}, format="json").status_code == 202
    ClientPolicy.objects.create(token=ApiToken.objects.get(name="free"), approval=ApprovalRule.ALWAYS)
    held = free.post(URL, {**BODY, "name": "after"}, format="json")
    assert held.status_code == 202 and held.json()["status"] == TaskStatus.PENDING_APPROVAL, held.content


def test_the_pool_read_carries_every_scanners_address(fresh_throttle_counts):
    def read(name: str) -> Pool:
        return pool_with_scanner_urls(name)

    def protected(scope) -> tuple:
        return scope.protected_networks, scope.protected_hostnames

    empty = PoolFactory(name="empty", scope=["192.0.2.0/24"])
    assert protected(pool_scope(read("empty"))) == protected(pool_scope(empty))
    other = PoolFactory(name="other", scope=["192.0.2.0/24"])
    for i, url in enumerate(["https://192.0.2.7:8834", "https://[2001:db8::5]:8834/", "https://Nessus.Example.NET",
                             "http://host-with-quote'.example:8834", "https://ünï.example"]):
        ScannerFactory(pool=other if i % 2 else empty, name=f"s{i}", url=url)
    assert sorted(scanner_hosts()) == sorted(["192.0.2.7", "2001:db8::5", "nessus.example.net",
                                              "host-with-quote'.example", "ünï.example"])
    with CaptureQueriesContext(connection) as queries:
        annotated = pool_scope(read("empty"))
    assert len(queries.captured_queries) == 1
    assert protected(annotated) == protected(pool_scope(empty))
    assert "nessus.example.net" in annotated.protected_hostnames
    # And a submission still refuses a scanner's own address, in a pool whose scope holds it.
    with pytest.raises(ScopeError, match=r"192\.0\.2\.7"):
        services.submit(pool="empty", name="at the scanner", targets=["192.0.2.7"])
    assert not ScanTask.objects.exists()


def test_the_dispatch_request_survives_a_lost_script_cache(redis_conn, fresh_throttle_counts):
    pool_obj = PoolFactory(name="lua", scope=["192.0.2.0/24"])
    dispatch.request_dispatch(pool_obj)  # enqueues the pool's dispatch job
    status = redis_conn.hget(f"rq:job:{dispatch.JOB_ID.format(pool_obj.pk)}", "status")
    assert status == b"queued"
    seq = dispatch.SEQ_KEY.format(pool_obj.pk)
    before = int(redis_conn.get(seq))
    redis_conn.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    dispatch.request_dispatch(pool_obj)
    assert int(redis_conn.get(seq)) == before + 1
    assert 0 < redis_conn.ttl(seq) <= dispatch._SEQ_TTL
    redis_conn.flushall()  # no counter, no job: the next request makes both again
    dispatch.request_dispatch(pool_obj)
    assert redis_conn.get(seq) == b"1"
    assert redis_conn.hget(f"rq:job:{dispatch.JOB_ID.format(pool_obj.pk)}", "status") == b"queued"


def test_a_parsed_scope_is_reused_only_for_the_same_scope_flag_and_scanners(fresh_throttle_counts):
    def scope_of(name: str):
        return pool_scope(pool_with_scanner_urls(name))

    target = parse_target("192.0.2.9")
    PoolFactory(name="p", scope=["192.0.2.0/24"])
    assert scope_of("p").allows(target)
    assert scope_of("p") is scope_of("p")  # one parse for the same inputs
    Pool.objects.filter(name="p").update(scope=["198.51.100.0/24"])
    assert not scope_of("p").allows(target)
    Pool.objects.filter(name="p").update(scope=["192.0.2.0/24"])
    ScannerFactory(pool=Pool.objects.get(name="p"), name="at-9", url="https://192.0.2.9:8834")
    assert scope_of("p").refusal(target).startswith("protected")
    Pool.objects.filter(name="p").update(allow_any_target=True, scope=[])
    assert scope_of("p").refusal(target).startswith("protected")  # a scanner stays protected
    assert scope_of("p").allows(parse_target("203.0.113.1"))


def test_the_raw_pool_read_gives_the_orm_s_pool_and_takes_the_name_as_a_parameter(fresh_throttle_counts):
    made = PoolFactory(name="zone-ä", scope=["192.0.2.0/24", "*.example.com"], allow_any_target=False, max_queued=7,
                       description="it's « quoted »")
    PoolFactory(name="other")
    read = pool_with_scanner_urls("zone-ä")
    orm = Pool.objects.get(pk=made.pk)
    for field in Pool._meta.concrete_fields:  # the same values of the same types (a bool, not SQLite's 1)
        value, expected = getattr(read, field.attname), getattr(orm, field.attname)
        assert (value, type(value)) == (expected, type(expected)), field.name
    assert (read._state.db, read._state.adding) == (orm._state.db, False)  # a row of this database, as the ORM's
    assert read.get_deferred_fields() == set()  # every column read: nothing is fetched later behind our back
    assert json.loads(read.scanner_urls) == []
    for name in ["x' OR '1'='1", "zone-ä' --", "%", "", "ZONE-Ä"]:
        assert pool_with_scanner_urls(name) is None, name


@pytest.mark.parametrize("field", ["pool", "scanner_instance"])
def test_a_control_character_in_a_pool_or_scanner_name_is_a_clear_error(pool, field):
    names = {"pool": "dmz", "scanner_instance": "dmz-1", field: "dmz\x00-1"}
    with pytest.raises(SubmissionError) as refused:
        services.submit(pool=names["pool"], name="nul", targets=["192.0.2.10"],
                        scanner_instance=names["scanner_instance"])
    assert refused.value.field == field and "control characters" in refused.value.message
    assert not ScanTask.objects.exists()


def test_request_serializers_share_their_bound_fields_and_still_judge_each_body_alone():
    from tasks.api.serializers import ScanCreateSerializer

    first, second = ScanCreateSerializer(data={**BODY, "credentials": {"username": "u", "password": "p"}}), \
        ScanCreateSerializer(data={"name": 7, "targets": 5, "nope": 1})
    assert first.fields is second.fields  # built and bound once per class, not per request
    assert first.is_valid() and not second.is_valid()
    assert set(second.errors) == {"nope"}  # an unknown field is named first; nothing of the first body leaks in
    third = ScanCreateSerializer(data={"name": 7, "targets": 5})
    assert not third.is_valid()
    assert third.errors["name"] == ["must be a string, not int"] and "targets" in third.errors
    assert first.validated_data["credentials"] == {"username": "u", "password": "p"}
    plain = ScanCreateSerializer(data=BODY)
    assert plain.is_valid() and plain.validated_data == {**BODY, "scan_type": "untrusted"}

    # The browsable API's form (a context) and a partial serializer get fields of their own, as DRF makes them.
    request = APIRequestFactory().get(URL)
    form = ScanCreateSerializer(context={"request": request})
    assert form.fields is not first.fields and form.fields is form.fields
    assert form.fields["name"].parent is form and form.fields["name"].context["request"] is request
    assert form.fields["credentials"].fields["username"].root is form  # a nested serializer reads its own root
    partial = ScanCreateSerializer(data={"name": "only"}, partial=True)
    assert partial.fields is not first.fields and partial.is_valid(), partial.errors
