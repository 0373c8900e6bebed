"""``manage.py scanworker [--pools a,b] [--burst]``: an RQ worker, with RQ's scheduler, on pool queues."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scanpool_site.redis_url import redacted, redis_problem
from tasks.queues import get_connection
from tasks.worker import PoolWorker, RedisPolicyError, check_redis_policy, keep_db_connections, resolve_pools


class Command(BaseCommand):
    help = ("Run a scan worker (RQ worker + scheduler) on the queues of the given pools "
            "(default: WORKER_POOLS, else every pool, including pools created later).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pools", default=None,
                            help="Comma-separated pool names (default: env WORKER_POOLS, else all pools).")
        parser.add_argument("--burst", action="store_true", help="Run the jobs that are due, then exit.")
        parser.add_argument("--name", default=None, help="Worker name (default: random).")
        parser.add_argument("--refresh", type=int, default=None,
                            help="Seconds between re-reads of the pool list (default SCANPOOL_WORKER_REFRESH).")

    def handle(self, *args: Any, **options: Any) -> None:
        raw = options["pools"]
        names = [n.strip() for n in raw.split(",") if n.strip()] if raw is not None else list(settings.WORKER_POOLS)
        conn = get_connection()
        try:
            check_redis_policy(conn)
        except RedisPolicyError as exc:
            raise CommandError(f"refusing to start: {exc}") from None
        except Exception as exc:
            raise CommandError(f"cannot reach Redis at {redacted(settings.REDIS_URL)}: "
                               f"{redis_problem(exc, settings.REDIS_URL)}") from None
        try:
            pools = resolve_pools(names)
        except ValueError as exc:
            raise CommandError(f"--pools: {exc}") from None
        served = ", ".join(p.name for p in pools) or "(no pool yet)"
        scope = "all pools, including new ones" if not names else "these pools only"
        self.stdout.write(f"scanworker: serving {served} ({scope}); Redis {redacted(settings.REDIS_URL)}")
        keep_db_connections()
        worker = PoolWorker(names, name=options["name"], refresh_interval=options["refresh"])
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        worker.work(burst=options["burst"], with_scheduler=True, logging_level=level)
