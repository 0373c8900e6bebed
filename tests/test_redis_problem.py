"""A shell that forgot REDIS_URL's password (README: "Other manage.py commands") is told so, not shown Redis' "HELLO
must be called with the client already authenticated…"."""

from __future__ import annotations

from io import StringIO
from urllib.parse import urlparse, urlunparse

import pytest
import redis
from django.core.management import CommandError, call_command

from scanpool_site.redis_url import has_password, redis_problem
from tasks.engine.recovery import reconcile
from tests.factories import PoolFactory

HINT = "REDIS_URL has none"


def without_password(url: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(netloc=f"{parsed.hostname}:{parsed.port}"))


@pytest.fixture
def passwordless(settings, redis_conn):
    if not has_password(settings.REDIS_URL):
        pytest.skip("the test Redis has no password")
    settings.REDIS_URL = without_password(settings.REDIS_URL)
    return settings.REDIS_URL


def test_redis_problem_says_what_to_fix():
    url = "redis://127.0.0.1:6379/0"
    refused = redis_problem(redis.AuthenticationError("HELLO must be called with the client already authenticated"),
                            url)
    assert refused.startswith("AuthenticationError: HELLO must be called") and HINT in refused
    assert 'export REDIS_URL="redis://:$(cat var/redis-password)@127.0.0.1:6379/0"' in refused
    wrong = redis_problem(redis.AuthenticationError("invalid username-password pair"), "redis://:pw@h:6379/0")
    assert "check the password in REDIS_URL" in wrong and "pw@" not in wrong
    down = redis_problem(redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."), url)
    assert down == ("ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused; is Redis running at "
                    "that address? (`make run` starts one; else check REDIS_URL)")
    assert redis_problem(redis.ResponseError("OOM"), url) == "ResponseError: OOM"


def test_commands_say_redis_url_lacks_the_password(db, passwordless):
    PoolFactory(name="dmz")
    with pytest.raises(CommandError, match=HINT):
        call_command("dlq", "list", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match=HINT):
        call_command("scanworker", "--burst", stdout=StringIO(), stderr=StringIO())
    (error,) = reconcile(check_scanners=False).errors
    assert error.startswith("pool dmz: AuthenticationError") and HINT in error
