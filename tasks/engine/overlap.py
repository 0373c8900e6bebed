"""Redis round trips that overlap the caller's own work: the command is sent now, its answer read when the block ends.

A submission's dispatch request (:func:`tasks.engine.dispatch.request_dispatch`) is one Redis command sent after
the task is committed; its answer takes a round trip (the Redis server wakes, runs the script, answers) during which
the web process did nothing, though the submission's answer (the task's document, its queue estimate, the log line)
was still to be made. Inside :func:`overlapped`, :func:`send` writes the command on a connection of its own and
returns; when the block ends, however it ends, each answer is read and handed to the caller's continuation: the
request is complete before the block is left, as if it had been made synchronously. If the command cannot be sent,
or its answer cannot be read (Redis restarted, the script cache lost), the caller's ``fallback`` makes the request
the usual way, with redis-py's retries; a command that reached Redis and is made again only bumps a counter twice.

Outside a block, :func:`send` returns False and the caller does the round trip itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis

log = logging.getLogger(__name__)

_Pending = tuple[Any, Any, Callable[[Any], None], Callable[[], None]]  # (pool, connection, then, fallback)
_pending: ContextVar[list[_Pending] | None] = ContextVar("scanpool_overlapped_redis", default=None)


@contextmanager
def overlapped() -> Iterator[None]:
    """Commands sent by :func:`send` inside the block have their answers read, and their continuations run, when it
    ends (in the order they were sent, also when the block raises)."""
    pending: list[_Pending] = []
    token = _pending.set(pending)
    try:
        yield
    finally:
        _pending.reset(token)
        for entry in pending:
            _finish(*entry)


def send(client: redis.Redis, script_sha: str, keys: Sequence[str], args: Sequence[Any], *,
         then: Callable[[Any], None], fallback: Callable[[], None]) -> bool:
    """Inside :func:`overlapped`: send ``EVALSHA script_sha`` with ``keys`` and ``args`` on a connection of
    ``client``'s pool now, and call ``then(answer)`` when the block ends (``fallback()`` instead if the answer cannot
    be read). Returns False, having sent nothing, outside a block or when the command cannot be sent: the caller
    makes the request itself."""
    pending = _pending.get()
    if pending is None:
        return False
    pool = client.connection_pool
    try:
        connection = pool.get_connection()
    except redis.RedisError:
        return False
    try:
        connection.send_command("EVALSHA", script_sha, len(keys), *keys, *args)
    except redis.RedisError:
        connection.disconnect()
        pool.release(connection)
        return False
    pending.append((pool, connection, then, fallback))
    return True


def _finish(pool, connection, then: Callable[[Any], None], fallback: Callable[[], None]) -> None:
    """Read the answer and run the continuation; like a robust ``on_commit`` callback (where the command was sent),
    an error of the continuation is logged, not raised: the caller's work is done and the other answers wait."""
    answered = False
    try:
        answer, failed = connection.read_response(), None
        answered = True
    except redis.RedisError as exc:  # NOSCRIPT (a restarted Redis), a lost connection, a timeout
        answer, failed = None, exc
        answered = isinstance(exc, redis.exceptions.ResponseError)  # an error answer: the connection is fine
    finally:
        if not answered:  # nothing half-read may reach the connection's next user
            connection.disconnect()
        pool.release(connection)
    try:
        if failed is None:
            then(answer)
        else:
            log.debug("an overlapped Redis command got no answer (%s): made again the usual way", failed)
            fallback()
    except Exception:
        log.exception("the continuation of an overlapped Redis command failed")
