"""Scan credentials sent to the API never come back: not in the 202, the status, the list, the schema's
examples, a log line, or anything in Redis (the job payloads carry ids only)."""

from __future__ import annotations

import logging

import pytest

from tasks.engine.dispatch import dispatch_pool
from tasks.models import ScanTask
from tests.api_support import OPERATE, token_client, user_with

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "Pw-n0t-in-any-output-7731"
ESCALATION = "Sudo-n0t-in-any-output-4410"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nKEY-n0t-in-any-output-9902\n-----END OPENSSH PRIVATE KEY-----"
SECRETS = (PASSWORD, ESCALATION, "KEY-n0t-in-any-output-9902")


def test_credentials_never_leave(pool, redis_conn, caplog, fresh_throttle_counts):
    caplog.set_level(logging.DEBUG)
    client, _ = token_client(user_with(OPERATE))
    seen: list[str] = []
    first = client.post("/api/v1/scans/", {
        "name": "priv", "targets": ["192.0.2.10"], "scanner_pool": "dmz", "scan_type": "authenticated_privileged",
        "credentials": {"username": "scan", "password": PASSWORD, "elevate_privileges_with": "sudo",
                        "escalation_password": ESCALATION}}, format="json")
    assert first.status_code == 202, first.content
    second = client.post("/api/v1/scans/", {
        "name": "key", "targets": ["192.0.2.11"], "scanner_pool": "dmz", "scan_type": "authenticated",
        "credentials": {"username": "scan", "private_key": KEY}}, format="json")
    assert second.status_code == 202
    bad = client.post("/api/v1/scans/", {  # an error answer must not echo them either
        "name": "bad", "targets": ["192.0.2.11"], "scanner_pool": "dmz", "scan_type": "authenticated",
        "credentials": {"username": "scan", "password": PASSWORD, "private_key": KEY}}, format="json")
    assert bad.status_code == 400
    task_id = first.json()["task_id"]
    task = ScanTask.objects.get(pk=task_id)
    assert task.credentials["password"] == PASSWORD  # stored (encrypted) for the scanner, and only there
    seen += [first.content.decode(), second.content.decode(), bad.content.decode()]
    seen.append(client.get(f"/api/v1/scans/{task_id}/").content.decode())
    seen.append(client.get("/api/v1/scans/").content.decode())
    seen.append(client.get("/api/v1/scans/", HTTP_ACCEPT="text/html").content.decode())
    seen.append(client.get("/api/schema/").content.decode())

    dispatch_pool(task.pool_id)  # claims the tasks and enqueues their launch steps
    assert redis_conn.dbsize() > 0
    for key in redis_conn.scan_iter():
        kind = redis_conn.type(key).decode()
        if kind == "string":
            seen.append(repr(redis_conn.get(key)))
        elif kind == "hash":
            seen.append(repr(redis_conn.hgetall(key)))
        elif kind == "list":
            seen.append(repr(redis_conn.lrange(key, 0, -1)))
        elif kind == "zset":
            seen.append(repr(redis_conn.zrange(key, 0, -1)))
        elif kind == "set":
            seen.append(repr(redis_conn.smembers(key)))
    job_hashes = [k for k in redis_conn.scan_iter("rq:job:*") if redis_conn.type(k) == b"hash"]
    assert job_hashes, "expected RQ jobs in Redis"
    from rq.job import Job
    from rq.serializers import JSONSerializer

    for key in job_hashes:  # job data is compressed: decode each job's call
        job = Job.fetch(key.decode().removeprefix("rq:job:"), connection=redis_conn, serializer=JSONSerializer)
        seen.append(f"{job.func_name} {job.args!r} {job.kwargs!r} {job.description} {job.meta!r}")
    assert any("launch" in text for text in seen)
    seen.append(caplog.text)
    seen.extend(str(r.args) for r in caplog.records)
    everything = "\n".join(seen)
    for secret in SECRETS:
        assert secret not in everything
