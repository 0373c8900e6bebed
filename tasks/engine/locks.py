"""Per-task Redis locks that know their holder: a lock left by a process that died (``kill -9``, OOM)
on this host is broken at once instead of blocking the task until the lock's TTL runs out.

The lock's token is ``<host>|<pid>|<process start time>|<random>``. Another process on the same host
that finds the lock taken checks the holder: pid gone, a zombie, or the pid reused by a process that
started at another time → the holder is dead and the lock is deleted (compare-and-delete, so a lock
re-taken meanwhile by someone else is left alone). A holder on another host is trusted until the TTL.

A lock its holder could not release because Redis went away (:func:`release`; or whose acquisition met the
outage: the ``SET`` may have been applied) names a live holder, so it is not broken: its release is remembered
and done as soon as Redis answers (:mod:`tasks.engine.after_outage`), with the token compared, so a lock that
expired and was re-taken meanwhile is left alone.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from redis.exceptions import LockError
from redis.lock import Lock
from rq import Worker

from tasks.engine import after_outage

log = logging.getLogger(__name__)

# A scan worker heartbeats at least this often: idle, at every slice of its wait for work; busy, from a thread
# (tasks.worker_outage). A worker that cannot be checked by pid is dead when its heartbeat is older than
# HEARTBEAT_STALE (a few missed beats, and room for clocks a little apart).
BUSY_HEARTBEAT = 10
HEARTBEAT_STALE = 35


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``); "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int) -> bool:
    """Is local process ``pid`` running? (A zombie is dead: its parent died and nobody reaped it yet.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:  # Linux; elsewhere trust kill()
            stat = fh.read()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def worker_dead(conn: redis.Redis, name: str | None) -> bool:
    """Is RQ worker ``name`` gone? Its registration expired or says it died; or it ran on this host and its pid
    is dead; or it cannot be checked by pid (another host, or a hash without ``hostname``/``pid``: re-created by
    heartbeats after a flush) and its last heartbeat is older than ``HEARTBEAT_STALE`` seconds (or missing).
    Read through RQ's API (``Worker.find_by_key``), not raw keys."""
    if not name:
        return False
    return worker_gone(Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=conn))


def worker_gone(worker: Worker | None) -> bool:
    """:func:`worker_dead` for a worker already read from Redis (``Worker.all``: ``/readyz``); None: no registration.
    At most ``HEARTBEAT_STALE`` seconds after a worker on another host died, at once for one on this host."""
    if worker is None or worker.death_date is not None:
        return True
    if worker.hostname == socket.gethostname() and worker.pid:
        return not pid_alive(int(worker.pid))
    if worker.last_heartbeat is None:
        return True
    return (datetime.now(UTC) - worker.last_heartbeat).total_seconds() > HEARTBEAT_STALE


def owner_token() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_start_time(pid)}|{uuid.uuid4().hex}"


def holder_dead(token: str) -> bool:
    """Is the process that took a lock with ``token`` gone? Only answerable for this host."""
    parts = token.split("|")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    if not pid_alive(pid):
        return True
    return bool(started) and _start_time(pid) not in ("", started)  # the pid now belongs to another process


def break_if_dead(conn: redis.Redis, key: str) -> bool:
    """Delete lock ``key`` when its holder died on this host; True when it was broken."""
    with conn.pipeline() as pipe:
        try:
            pipe.watch(key)
            raw = pipe.get(key)
            if not raw or not holder_dead(raw.decode(errors="replace")):
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
        except redis.WatchError:  # re-taken meanwhile: someone alive holds it now
            return False
    log.warning("broke lock %s left by dead process %s", key, raw.decode(errors="replace").rsplit("|", 1)[0])
    return True


def acquire(lock: Lock, *, blocking: bool = False, blocking_timeout: float | None = None) -> bool:
    """``lock.acquire`` with a holder-aware token; a lock held by a dead local process is broken first. Redis lost
    meanwhile: the error is raised, and the lock released once Redis is back in case the ``SET`` went through."""
    token = owner_token()
    try:
        if lock.acquire(blocking=False, token=token):
            return True
        if break_if_dead(lock.redis, lock.name) and lock.acquire(blocking=False, token=token):
            return True
        if blocking:
            return lock.acquire(blocking=True, blocking_timeout=blocking_timeout, token=token)
        return False
    except after_outage.REDIS_DOWN:
        _release_later(lock, token.encode(), None)
        raise


def release(lock: Lock, *, then: Callable[[], object] | None = None) -> None:
    """``lock.release()``. Redis unreachable: the error is raised, and the release — then ``then()`` — is done once
    Redis is back (:mod:`tasks.engine.after_outage`) instead of the lock blocking others until its TTL. A
    ``LockError`` (the lock expired, or is another holder's by now) is the caller's to handle, as before."""
    token = lock.local.token
    try:
        lock.release()
    except after_outage.REDIS_DOWN:
        if token is not None:
            _release_later(lock, token, then)
        raise


def _release_later(lock: Lock, token: bytes, then: Callable[[], object] | None) -> None:
    after_outage.remember(f"release {lock.name} {token.decode(errors='replace')}",
                          functools.partial(_release_token, lock, token, then))


def _release_token(lock: Lock, token: bytes, then: Callable[[], object] | None) -> None:
    try:
        lock.do_release(token)  # compare-and-delete: only while the lock still carries this token
        log.warning("released lock %s, left held by this process when Redis went away", lock.name)
    except LockError:
        pass  # expired meanwhile (or never taken): nothing of this process's to release
    if then is not None:
        then()
