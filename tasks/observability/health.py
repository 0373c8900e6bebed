"""Readiness checks for ``/readyz``: database, Redis (reachable, ``noeviction``), a live worker for every
enabled pool (read from RQ's worker registry, ``Worker.all``, each worker judged alive as the reconcile judges it:
:func:`tasks.engine.locks.worker_gone`), a scanner usable now in every enabled pool (one waiting out a
``Retry-After`` is not).

Each check returns ``(ok, detail)``; a failing check names its cause in words an operator can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from django.db import connection
from rq import Worker

from pools.models import Pool
from scanners.pacing import next_wait_end
from tasks.engine import locks
from tasks.pool_load import pool_load
from tasks.queues import SERIALIZER, get_connection
from tasks.worker import RedisPolicyError, check_redis_policy


@dataclass
class Readiness:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c["ok"]]

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = {"ok": ok, "detail": detail}

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unavailable", "failing": self.failing, "checks": self.checks}


def readiness() -> Readiness:
    result = Readiness()
    db_ok = _database(result)
    conn = _redis(result)
    if not db_ok:
        result.add("workers", False, "not checked: the database is unavailable")
        result.add("scanners", False, "not checked: the database is unavailable")
        return result
    pools = list(Pool.objects.filter(enabled=True).order_by("name"))
    if conn is None:
        result.add("workers", False, "not checked: Redis is unavailable")
    else:
        _workers(result, conn, pools)
    _scanners(result, pools)
    return result


def _database(result: Readiness) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        result.add("database", False, f"database unavailable: {type(exc).__name__}: {exc}")
        return False
    result.add("database", True, "reachable")
    return True


def _redis(result: Readiness) -> redis.Redis | None:
    conn = get_connection()
    try:
        conn.ping()
    except redis.RedisError as exc:
        result.add("redis", False, f"Redis unreachable: {type(exc).__name__}: {exc}")
        return None
    try:
        policy = check_redis_policy(conn)
    except RedisPolicyError as exc:
        result.add("redis", False, str(exc))
        return conn
    except redis.RedisError as exc:
        result.add("redis", False, f"Redis policy unreadable: {exc}")
        return conn
    result.add("redis", True, f"reachable, maxmemory-policy {policy}")
    return conn


def _workers(result: Readiness, conn: redis.Redis, pools: list[Pool]) -> None:
    try:
        served: dict[str, int] = {}
        for worker in Worker.all(connection=conn, serializer=SERIALIZER):
            # Alive as the reconcile judges it (heartbeat age; on this host, its pid), not merely registered: a
            # worker killed with -9 stays registered until its key expires (worker_ttl + 60 s, about 8 minutes).
            if locks.worker_gone(worker):
                continue
            for name in worker.queue_names():
                served[name] = served.get(name, 0) + 1
    except redis.RedisError as exc:
        result.add("workers", False, f"cannot read RQ's worker registry: {exc}")
        return
    missing = [p.name for p in pools if not served.get(p.queue_name)]
    if missing:
        result.add("workers", False, f"no live worker serves pool(s): {', '.join(missing)} "
                   "(start `manage.py scanworker` for them)")
    else:
        result.add("workers", True, f"every enabled pool has a live worker ({len(pools)} pool(s))")


def _scanners(result: Readiness, pools: list[Pool]) -> None:
    unusable, waiting = [], []
    for pool in pools:
        load = pool_load(pool)
        if load.capacity:
            continue
        until = next_wait_end(pool.pk) if load.waiting_slots else None
        if until is not None:  # usable but for a Retry-After wait: no task can get a slot there before it ends
            waiting.append(f"{pool.name} (until {until:%H:%M:%S} UTC)")
        else:
            unusable.append(pool.name)
    problems = []
    if unusable:
        problems.append(f"no usable scanner (enabled, healthy, breaker not open) in pool(s): {', '.join(unusable)}")
    if waiting:
        problems.append("every usable scanner asked scanpool to wait (HTTP 429/503 Retry-After) in pool(s): "
                        f"{', '.join(waiting)}")
    if problems:
        result.add("scanners", False, "; ".join(problems))
    else:
        result.add("scanners", True, f"every enabled pool has a usable scanner ({len(pools)} pool(s))")
