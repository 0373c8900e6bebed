"""A dispatch request made inside ``overlap.overlapped()`` (a submission through the API) sends its Redis command at
once and completes when the block ends, whatever happens in between: a lost script cache, a connection cut while
the answer is on its way, a block that raises, a Redis that is not there. Real Redis, real database."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings as django_settings

from tasks.engine import dispatch, overlap
from tasks.queues import get_connection
from tests.factories import PoolFactory
from tests.redis_server import free_port

pytestmark = pytest.mark.django_db


def _job_status(redis_conn, pool) -> bytes | None:
    return redis_conn.hget(f"rq:job:{dispatch.JOB_ID.format(pool.pk)}", "status")


def _seq(redis_conn, pool) -> int:
    return int(redis_conn.get(dispatch.SEQ_KEY.format(pool.pk)) or 0)


def test_the_request_is_sent_at_once_and_completed_when_the_block_ends(redis_conn):
    pool = PoolFactory(name="overlap")
    with overlap.overlapped():
        dispatch.request_dispatch(pool)
        # Sent, not yet answered here: the enqueue that follows a "no dispatch job" answer has not happened.
        assert _job_status(redis_conn, pool) is None
    assert _job_status(redis_conn, pool) == b"queued"
    assert _seq(redis_conn, pool) == 1
    with overlap.overlapped():  # a dispatch job waits: the request is the bump alone
        dispatch.request_dispatch(pool)
    assert _seq(redis_conn, pool) == 2 and _job_status(redis_conn, pool) == b"queued"
    pool_of_client = get_connection().connection_pool
    assert not pool_of_client._in_use_connections  # every connection went back to the client's pool


def test_a_block_that_raises_still_completes_its_requests(redis_conn):
    pool = PoolFactory(name="raises")
    with pytest.raises(RuntimeError), overlap.overlapped():
        dispatch.request_dispatch(pool)
        raise RuntimeError("the answer could not be made")
    assert _job_status(redis_conn, pool) == b"queued" and _seq(redis_conn, pool) == 1


def test_a_lost_script_cache_makes_the_request_the_usual_way(redis_conn):
    pool = PoolFactory(name="noscript")
    get_connection().ping()
    redis_conn.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    with overlap.overlapped():
        dispatch.request_dispatch(pool)
    assert _seq(redis_conn, pool) == 1  # NOSCRIPT ran nothing; the usual way (EVAL) bumped once
    assert _job_status(redis_conn, pool) == b"queued"


def test_a_connection_cut_before_the_answer_is_read_makes_the_request_again(redis_conn):
    pool = PoolFactory(name="cut")
    with overlap.overlapped():
        dispatch.request_dispatch(pool)
        redis_conn.client_kill_filter(_type="normal", skipme=True)  # every client connection but this one
    # The command may have run before the cut: made again, the counter moved once or twice, and the job waits.
    assert _seq(redis_conn, pool) in (1, 2)
    assert _job_status(redis_conn, pool) == b"queued"
    assert not get_connection().connection_pool._in_use_connections


def test_no_redis_the_request_is_logged_for_the_reconcile_without_the_url_s_password(settings, caplog):
    pool = PoolFactory(name="no-redis")
    settings.REDIS_URL = f"redis://:pw-in-url@127.0.0.1:{free_port()}/0"
    assert django_settings.REDIS_URL == settings.REDIS_URL
    with caplog.at_level(logging.WARNING, logger="tasks.engine.dispatch"), overlap.overlapped():
        dispatch.request_dispatch(pool)
    assert any("reconcile will do it" in r.getMessage() for r in caplog.records)
    assert "pw-in-url" not in caplog.text


def test_a_failing_continuation_is_logged_and_the_other_answers_are_still_read(redis_conn, caplog):
    client = get_connection()
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    client.ping()
    script(keys=["warm"])  # the script is in Redis's cache
    seen = []

    def broken(answer):
        raise ValueError(f"could not use {answer!r}")

    with caplog.at_level(logging.ERROR, logger="tasks.engine.overlap"), overlap.overlapped():
        assert overlap.send(client, script.sha, ["n"], [], then=broken, fallback=lambda: seen.append("fallback"))
        assert overlap.send(client, script.sha, ["n"], [], then=seen.append, fallback=lambda: seen.append("fallback"))
    assert seen == [2]  # the second answer, read after the first continuation failed
    assert "could not use 1" in caplog.text
    assert not overlap.send(client, script.sha, ["n"], [], then=seen.append, fallback=seen.append)  # no block
    assert redis_conn.get("n") == b"2" and not client.connection_pool._in_use_connections
