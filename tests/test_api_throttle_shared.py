"""API throttle counts live in Redis in production (CACHES → REDIS_URL), so every web process counts a
client's requests together; an unreachable cache lets requests through instead of failing the API."""

from __future__ import annotations

import logging

import pytest

from tasks.models import ScanTask
from tests.api_support import SUBMIT, fresh_throttle_counts, pool, token_client, user_with  # noqa: F401
from tests.redis_server import free_port
from tests.test_api_auth import SUBMISSION
from tests.test_settings import production_env, run

pytestmark = pytest.mark.django_db


def _redis_cache(location: str) -> dict:
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location,
                        "KEY_PREFIX": "scanpool-cache", "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}


def test_production_counts_requests_in_redis(tmp_path):
    code = ("from django.conf import settings; c = settings.CACHES['default']; "
            "print(c['BACKEND'], c['LOCATION'] == settings.REDIS_URL)")
    result = run(["manage.py", "shell", "-c", code], production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["django.core.cache.backends.redis.RedisCache", "True"]


def test_a_new_process_sees_the_counts_of_the_others(pool, settings, redis_conn):  # noqa: F811
    settings.CACHES = _redis_cache(settings.REDIS_URL)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"submit": "2/min", "read": "1000/min"}}
    client, _ = token_client(user_with(SUBMIT, "shared"))
    for i in range(2):
        assert client.post("/api/v1/scans/", {**SUBMISSION, "name": f"s{i}"}, format="json").status_code == 202
    keys = [k.decode() for k in redis_conn.keys("scanpool-cache:*throttle-submit*")]
    assert len(keys) == 1, keys
    # Setting CACHES again drops this process's cache objects and their connections (Django's setting_changed
    # handler): what a fresh web process starts with. The third request is still refused: the count was in Redis.
    settings.CACHES = _redis_cache(settings.REDIS_URL)
    response = client.post("/api/v1/scans/", {**SUBMISSION, "name": "s3"}, format="json")
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) >= 1
    assert ScanTask.objects.count() == 2


def test_an_unreachable_cache_lets_requests_through(pool, settings, redis_conn, caplog):  # noqa: F811
    settings.CACHES = _redis_cache(f"redis://:cache-password-xyz@127.0.0.1:{free_port()}/0")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"submit": "1/min", "read": "1000/min"}}
    client, _ = token_client(user_with(SUBMIT, "no-cache"))
    with caplog.at_level(logging.WARNING, logger="tasks.api.throttles"):
        for i in range(3):  # over the rate: nothing counts while the cache is down
            assert client.post("/api/v1/scans/", {**SUBMISSION, "name": f"s{i}"}, format="json").status_code == 202
        assert client.get("/api/v1/scans/").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "tasks.api.throttles"]
    assert warnings and all("unreachable" in w for w in warnings)
    assert not any("cache-password-xyz" in w for w in warnings)
    assert ScanTask.objects.count() == 3
