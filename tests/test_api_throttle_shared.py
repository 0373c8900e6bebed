"""API throttle counts live in Redis and are checked and recorded atomically: every web process counts a
client's requests together, concurrent requests never get past the rate, and an unreachable Redis lets
requests through instead of failing the API."""

from __future__ import annotations

import logging
import multiprocessing
import time

import pytest
from rest_framework.settings import api_settings

from tasks.api import throttles
from tasks.models import ApiToken, ScanTask
from tests.api_support import SUBMIT, fresh_throttle_counts, pool, token_client, user_with  # noqa: F401
from tests.redis_server import free_port
from tests.test_api_auth import SUBMISSION
from tests.test_settings import production_env, run

pytestmark = pytest.mark.django_db


def _rates(settings, submit: str, read: str = "100000/min") -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"submit": submit, "read": read}}


class _View:
    throttle_scopes = {"create": "submit"}
    action = "create"


class _Request:
    """What the throttle reads of a request: the client's token."""

    def __init__(self, token_pk: int) -> None:
        self.auth = ApiToken(pk=token_pk)
        self.user = None


def _hammer(args: tuple[int, int]) -> int:
    """In a child process (its own Redis connection): ``n`` submissions of client ``token_pk`` at once with the
    other children; how many were allowed."""
    token_pk, n = args
    throttle = throttles.ClientRateThrottle()
    return sum(throttle.allow_request(_Request(token_pk), _View()) for _ in range(n))


def test_production_throttles_with_the_atomic_redis_throttle(tmp_path):
    code = ("from rest_framework.settings import api_settings as a; from tasks.api import throttles as t; "
            "from django.conf import settings as s; c = t.connection().connection_pool.connection_kwargs; "
            "print([k.__name__ for k in a.DEFAULT_THROTTLE_CLASSES], c['port'], c['socket_timeout'], "
            "s.REDIS_URL.rsplit(':', 1)[1].split('/')[0])")
    result = run(["manage.py", "shell", "-c", code], production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    classes, port, timeout, url_port = result.stdout.strip().splitlines()[-1].rsplit(" ", 3)
    assert classes == "['ClientRateThrottle']" and port == url_port and float(timeout) == 2


def test_concurrent_processes_never_let_a_client_past_its_rate(settings, redis_conn, fresh_throttle_counts):  # noqa: F811
    """Eight processes submit 40 times each at once for one client limited to 100 a minute: exactly 100 pass.
    (DRF's cache-based throttle reads the history and writes it back: processes can overwrite each other's
    entries and let more than 100 pass, DRF issue #5181.)"""
    _rates(settings, "100/min")
    assert api_settings.DEFAULT_THROTTLE_RATES["submit"] == "100/min"
    with multiprocessing.get_context("fork").Pool(8) as workers:
        allowed = workers.map(_hammer, [(4242, 40)] * 8)
    assert sum(allowed) == 100, allowed
    assert _hammer((4243, 5)) == 5  # another client has its own count


def test_a_new_process_sees_the_counts_of_the_others(pool, settings, redis_conn, fresh_throttle_counts):  # noqa: F811
    _rates(settings, "2/min")
    client, _ = token_client(user_with(SUBMIT, "shared"))
    for i in range(2):
        assert client.post("/api/v1/scans/", {**SUBMISSION, "name": f"s{i}"}, format="json").status_code == 202
    keys = [k.decode() for k in redis_conn.keys(throttles.KEY_PREFIX + "submit:*")]
    assert len(keys) == 1, keys
    throttles._local.__dict__.clear()  # what a fresh web process starts with: no client, no connection
    response = client.post("/api/v1/scans/", {**SUBMISSION, "name": "s3"}, format="json")
    assert response.status_code == 429, response.content
    assert 45 <= int(response["Retry-After"]) <= 60  # when the first of the two leaves the minute
    assert ScanTask.objects.count() == 2


def test_a_refused_request_is_not_counted_and_the_window_slides(settings, redis_conn, fresh_throttle_counts):  # noqa: F811
    _rates(settings, "2/s")
    throttle, request, view = throttles.ClientRateThrottle(), _Request(7), _View()
    started = time.monotonic()
    assert throttle.allow_request(request, view) and throttle.allow_request(request, view)
    refused = 0
    while refused < 10 and time.monotonic() - started < 0.9:  # within the second both were counted in
        assert not throttle.allow_request(request, view)  # refused: none may push the client's next chance back
        assert 0 < throttle.wait() <= 1
        refused += 1
    assert redis_conn.zcard(throttles.KEY_PREFIX + "submit:token-7") == 2  # only the two allowed are counted
    deadline = time.monotonic() + 3
    while not throttle.allow_request(request, view):
        assert time.monotonic() < deadline, "the window did not slide: refused requests were counted"
        time.sleep(0.05)
    members = redis_conn.zcard(throttles.KEY_PREFIX + "submit:token-7")
    assert members <= 2
    assert 0 < redis_conn.pttl(throttles.KEY_PREFIX + "submit:token-7") <= 1000  # the key lives one window


def test_a_rate_of_zero_refuses_every_request_with_a_retry_after(settings, redis_conn, fresh_throttle_counts):  # noqa: F811
    _rates(settings, "0/min")
    throttle = throttles.ClientRateThrottle()
    for _ in range(3):
        assert not throttle.allow_request(_Request(9), _View())
        assert throttle.wait() == 60
    assert not redis_conn.exists(throttles.KEY_PREFIX + "submit:token-9")  # nothing was counted


def test_an_unreachable_redis_lets_requests_through(pool, settings, redis_conn, caplog):  # noqa: F811
    settings.REDIS_URL = f"redis://:redis-password-xyz@127.0.0.1:{free_port()}/0"
    _rates(settings, "1/min", "1000/min")
    client, _ = token_client(user_with(SUBMIT, "no-redis"))
    with caplog.at_level(logging.WARNING, logger="tasks.api.throttles"):
        for i in range(3):  # over the rate: nothing counts while Redis is down
            assert client.post("/api/v1/scans/", {**SUBMISSION, "name": f"s{i}"}, format="json").status_code == 202
        assert client.get("/api/v1/scans/").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "tasks.api.throttles"]
    assert warnings and all("unreachable" in w for w in warnings)
    assert not any("redis-password-xyz" in w for w in caplog.text.splitlines())
    assert ScanTask.objects.count() == 3
