"""The scan worker: an RQ worker (with RQ's scheduler) on the queues of some or all pools.

* Queues come from the database (``scanpool-<pool>``), not from django-rq's static ``RQ_QUEUES``.
  A worker serving all pools re-reads the pool list between jobs every ``SCANPOOL_WORKER_REFRESH``
  seconds (at once on SIGHUP) and restarts its scheduler on the new set; a running step is never
  interrupted (SIGHUP interrupts only an idle wait for work, the way RQ's own SIGTERM handling does).
* Jobs run in the worker process (``SimpleWorker``: steps are short, Django's DB connection stays
  sane and there is no fork per poll); the death penalty still bounds every step.
* The periodic reconcile of each served pool is an RQ job scheduled by the worker at fixed time
  buckets with a unique job id, so many workers schedule it once.
* The daily ``cleanup_tasks`` job is scheduled the same way (one job id per day, ``SCANPOOL_CLEANUP_AT``); a run
  lost between its queue and a worker is run again (:mod:`tasks.daily_cleanup`).
* A scheduler lock left behind by a dead scheduler process on this host is released at start-up,
  so a restarted worker resumes scheduled polls at once instead of after the lock's TTL.
* A Redis outage (restart, lost connection) does not end the worker: it waits for Redis and carries on, and
  keeps its registration whole after a flush (:mod:`tasks.worker_outage`).
* Redis is a trust boundary: RQ would import and run any dotted function a job names. The worker runs
  only the public functions defined in :mod:`tasks.jobs` (:func:`allowed_job_functions`); any other job
  (foreign function, instance method, callbacks or webhooks, which scanpool never sets) fails into the
  queue's failed registry with the reason, before anything is imported or called.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import signal
import socket
import time
from datetime import UTC, datetime

import redis
from django import db
from django.conf import settings
from rq import SimpleWorker, worker_registration
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import release_lock
from rq.worker import WorkerStatus

from pools.models import Pool
from tasks import daily_cleanup, jobs
from tasks.engine.abandoned import PoolJob, PoolQueue
from tasks.engine.locks import pid_alive
from tasks.queues import CONTROL_QUEUE, SERIALIZER, get_connection, queue_for, worker_queue_names
from tasks.worker_outage import REDIS_DOWN, RedisOutageMixin

log = logging.getLogger(__name__)

SCHEDULER_CHECK_INTERVAL = 5  # seconds between attempts to restart a dead scheduler process
IDLE_SLICE = 10  # an idle worker wakes up this often to run its own checks (refresh, scheduler)


def allowed_job_functions() -> frozenset[str]:
    """Dotted names of the jobs a worker may run: every public function defined in :mod:`tasks.jobs`."""
    return frozenset(
        f"{jobs.__name__}.{name}"
        for name, obj in vars(jobs).items()
        if inspect.isfunction(obj) and obj.__module__ == jobs.__name__ and not name.startswith("_")
    )


def refusal_reason(job: Job, allowed: frozenset[str]) -> str | None:
    """Why ``job`` must not run (``None``: it is one of scanpool's own steps). Reads names only: nothing the job
    names is imported."""
    func_name = job.func_name
    if func_name not in allowed:
        return (f"function {str(func_name)[:200]!r} is not one of scanpool's job functions "
                f"({', '.join(sorted(allowed))})")
    if job.instance is not None:
        return "jobs bound to an instance are not scanpool jobs"
    for kind in ("success", "failure", "stopped"):
        name = getattr(job, f"_{kind}_callback_name", None)
        if name:
            return f"on_{kind} callback {str(name)[:200]!r} is not allowed (scanpool jobs have no callbacks)"
    if getattr(job, "webhooks", None):
        return "webhooks are not allowed (scanpool jobs have none)"
    return None


class RefusedJobError(Exception):
    """The failure recorded for a job the worker would not run."""


class RedisPolicyError(RuntimeError):
    pass


def check_redis_policy(conn: redis.Redis) -> str:
    """Refuse to run unless Redis evicts nothing (a dropped job key would silently lose work)."""
    try:
        policy = conn.info("memory").get("maxmemory_policy")
    except redis.ResponseError:
        policy = None
    if policy is None:
        try:
            policy = conn.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.ResponseError:
            policy = None
    if policy != "noeviction":
        raise RedisPolicyError(
            f"Redis maxmemory-policy is {policy!r}, but scanpool needs 'noeviction': with any other policy Redis may "
            "silently delete queued jobs under memory pressure. Fix: `redis-cli CONFIG SET maxmemory-policy "
            "noeviction` and put `maxmemory-policy noeviction` in redis.conf."
        )
    return policy


class PoolScheduler(RQScheduler):
    """RQ's scheduler, as a child process that dies with its worker: without this, a ``kill -9`` of only the
    worker's pid leaves the scheduler running as an orphan that keeps the scheduler locks (Linux prctl
    PDEATHSIG; elsewhere RQ's behaviour as is)."""

    def start(self):
        self._parent_pid = os.getpid()
        return super().start()

    def work(self):
        _die_with_parent(getattr(self, "_parent_pid", None))
        return super().work()


def _die_with_parent(parent_pid: int | None) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM (a graceful scheduler stop) when the parent dies
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _Refresh(Exception):
    """Raised by the SIGHUP handler to end an idle wait for work."""


def resolve_pools(names: list[str] | None) -> list[Pool]:
    """The pools to serve: the named ones (all must exist), or every pool when ``names`` is empty."""
    if not names:
        return list(Pool.objects.order_by("name"))
    found = {p.name: p for p in Pool.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        known = ", ".join(Pool.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise ValueError(f"unknown pool(s): {', '.join(missing)}; known pools: {known}")
    return [found[n] for n in names]


WORKER_CONN_MAX_AGE = 600


def keep_db_connections() -> None:
    """A worker runs many short steps: reopening the database for each (Django's default ``CONN_MAX_AGE`` 0)
    costs more than a poll's own work. Unless ``DATABASE_CONN_MAX_AGE`` says otherwise, a worker keeps its
    connection for ``WORKER_CONN_MAX_AGE`` seconds, checked before reuse (``CONN_HEALTH_CHECKS``); the steps'
    ``close_old_connections()`` still drops a broken one."""
    if os.environ.get("DATABASE_CONN_MAX_AGE"):
        return
    for conn in db.connections.all(initialized_only=False):
        if not conn.settings_dict.get("CONN_MAX_AGE"):
            conn.settings_dict["CONN_MAX_AGE"] = WORKER_CONN_MAX_AGE
            conn.settings_dict["CONN_HEALTH_CHECKS"] = True


class PoolWorker(RedisOutageMixin, SimpleWorker):
    """See the module docstring."""

    def __init__(self, pool_names: list[str] | None = None, *, refresh_interval: int | None = None, **kwargs):
        self.pool_names = list(pool_names or [])
        self.serve_all = not self.pool_names
        self.refresh_interval = refresh_interval or settings.SCANPOOL_WORKER_REFRESH
        self._refresh_requested = False
        self._in_wait = False
        self._last_refresh = time.monotonic()  # the pools are read just below
        self._reconciles_scheduled = False
        self._last_scheduler_check = 0.0
        self._scheduler_args: tuple | None = None
        conn = kwargs.pop("connection", None) or get_connection()
        kwargs.setdefault("serializer", SERIALIZER)
        kwargs.setdefault("job_class", PoolJob)
        kwargs.setdefault("queue_class", PoolQueue)  # as queue_for builds them
        kwargs.setdefault("maintenance_interval", 60)
        names = self._wanted_queue_names()
        super().__init__([queue_for(n, conn) for n in names], connection=conn, **kwargs)
        self.allowed_functions = allowed_job_functions()

    # ------------------------------------------------------------------ queues

    def _wanted_queue_names(self) -> list[str]:
        db.close_old_connections()
        # Every launch queue before any step queue: RQ takes the first job of the first non-empty queue in
        # this order, so a dispatch or launch never waits behind due polls.
        return worker_queue_names(resolve_pools(self.pool_names)) or [CONTROL_QUEUE]

    def refresh_queues(self, *, force: bool = False) -> bool:
        """Re-read the pools; switch queues (and the scheduler) when the set changed."""
        if not force and time.monotonic() - self._last_refresh < self.refresh_interval:
            if not self._reconciles_scheduled:  # the work loop's first pass: the pools were read in __init__
                self.schedule_reconciles()
            return False
        self._last_refresh = time.monotonic()
        self._refresh_requested = False
        self.schedule_reconciles()
        if not self.serve_all:
            return False
        wanted = self._wanted_queue_names()
        if wanted == self.queue_names():
            return False
        log.info("worker %s: pools changed, now serving %s", self.name, ", ".join(wanted))
        with self.connection.pipeline() as pipe:
            worker_registration.unregister(self, pipe)
            pipe.execute()
        self.queues = [queue_for(n, self.connection) for n in wanted]
        self._ordered_queues = self.queues[:]
        with self.connection.pipeline() as pipe:
            worker_registration.register(self, pipe)
            pipe.hset(self.key, "queues", ",".join(wanted))
            pipe.execute()
        if self.scheduler is not None and self._scheduler_args is not None:
            self.stop_scheduler()
            self.scheduler = None
            self._start_scheduler(*self._scheduler_args)
        self.schedule_reconciles()
        return True

    def _start_scheduler(self, burst=False, logging_level="INFO", *args, **kwargs):
        self._scheduler_args = (burst, logging_level, *args)
        if burst:
            self._break_dead_scheduler_locks()
            return super()._start_scheduler(burst, logging_level, *args, **kwargs)
        # RQ's own _start_scheduler, with a scheduler process that dies with this worker.
        self.scheduler = PoolScheduler(self.queues, connection=self.connection, serializer=self.serializer,
                                       logging_level=logging_level if logging_level is not None else self.log.level)
        try:
            self._break_dead_scheduler_locks()
            self.scheduler.acquire_locks()
            if self.scheduler.acquired_locks:
                self.scheduler.start()
        except REDIS_DOWN as exc:
            # Redis went away between the worker's registration and here (RQ's work() calls this before its loop,
            # outside any outage handling): the loop waits for Redis, and the scheduler starts once it is back
            # (after_reconnect, _revive_scheduler), instead of the worker exiting.
            log.warning("worker %s: Redis unreachable while starting the scheduler (%s: %s); it starts once Redis "
                        "is back", self.name, type(exc).__name__, exc)
            self._last_scheduler_check = 0.0
        return None

    def _break_dead_scheduler_locks(self) -> None:
        host = socket.gethostname()
        for name in self.queue_names():
            key = RQScheduler.get_locking_key(name)
            owner = self.connection.get(key)
            if not owner:
                continue
            owner = owner.decode()
            # The owner's metadata hash (rq's RQScheduler.to_dict); missing or partial: let the lock expire.
            meta = self.connection.hmget(SCHEDULER_KEY_TEMPLATE % owner, "hostname", "pid")
            hostname, pid = (v.decode() if v else "" for v in meta)
            if hostname != host or not pid.isdigit() or int(pid) == 0 or pid_alive(int(pid)):
                continue
            release_lock(self.connection, key, owner)
            log.warning("released scheduler lock of %s held by dead scheduler pid %s", name, pid)

    # ------------------------------------------------------------ periodic reconcile

    def schedule_reconciles(self) -> None:
        """Make sure the next periodic reconcile of each served pool is scheduled (unique per time bucket)."""
        self._reconciles_scheduled = True
        interval = max(5, settings.SCANPOOL_RECONCILE_INTERVAL)
        bucket = int(time.time() // interval) + 1
        at = datetime.fromtimestamp(bucket * interval, tz=UTC)
        for pool in resolve_pools(self.pool_names):
            queue = queue_for(pool.queue_name, self.connection)  # the step queue
            job = queue.create_job(
                jobs.reconcile_pool, args=(pool.pk,), job_id=f"reconcile-{pool.pk}-{bucket}",
                result_ttl=interval * 3, failure_ttl=settings.SCANPOOL_FAILURE_TTL,
                timeout=settings.SCANPOOL_STEP_TIMEOUT, description=f"reconcile pool {pool.name}",
            )
            try:
                queue.schedule_job(job, at, unique=True)
            except DuplicateJobError:
                pass
        self.schedule_cleanup()

    def schedule_cleanup(self) -> None:
        """Make sure the daily ``cleanup_tasks`` job is scheduled, and its last run was not lost
        (:mod:`tasks.daily_cleanup`)."""
        pools = resolve_pools(self.pool_names)
        if pools:
            daily_cleanup.schedule(queue_for(pools[0].queue_name, self.connection))

    # -------------------------------------------------------------- work loop hooks

    def _install_signal_handlers(self):
        super()._install_signal_handlers()
        signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, signum, frame):
        log.info("worker %s: SIGHUP, re-reading the pools", self.name)
        self._refresh_requested = True
        if self._in_wait:
            raise _Refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh_queues(force=self._refresh_requested)
        except REDIS_DOWN:
            raise  # the caller waits for Redis
        except Exception:  # a database hiccup must not kill the worker: keep the current queues
            log.exception("worker %s: could not re-read the pools; keeping %s", self.name, self.queue_names())
        self._revive_scheduler()

    def _revive_scheduler(self) -> None:
        """Restart a scheduler process that died (it exits on a Redis connection error, e.g. a Redis restart)
        within seconds; RQ itself only notices at its next maintenance (``maintenance_interval``)."""
        scheduler = self.scheduler
        if scheduler is None or (scheduler._process is not None and scheduler._process.is_alive()):
            return
        if time.monotonic() - self._last_scheduler_check < SCHEDULER_CHECK_INTERVAL:
            return
        self._last_scheduler_check = time.monotonic()
        try:
            scheduler.acquire_locks(auto_start=True)  # a no-op while another live worker holds the locks
        except redis.RedisError as exc:
            log.warning("worker %s: could not restart the scheduler yet (%s)", self.name, exc)

    def after_reconnect(self) -> None:
        self._break_dead_scheduler_locks()  # a restored Redis may hold the lock of the scheduler that died
        self._last_scheduler_check = 0.0  # restart it at the next idle slice

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        return self._retrying("waiting for work", self._dequeue_in_slices, timeout, max_idle_time)

    def _dequeue_in_slices(self, timeout, max_idle_time=None):
        if timeout is None or max_idle_time is not None:  # burst / idle-limited: RQ's behaviour as is
            self._safe_refresh()
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while True:
            self._safe_refresh()
            self._in_wait = True
            try:
                # Wake up every few seconds (an idle "timeout" of RQ's loop) to re-read the pools when due and
                # to restart a dead scheduler.
                wait = min(timeout, self.refresh_interval, IDLE_SLICE)
                result = super().dequeue_job_and_maintain_ttl(wait, wait)
            except _Refresh:
                continue
            finally:
                self._in_wait = False
            if result is not None or self._stop_requested:
                return result

    def execute_job(self, job, queue):
        try:
            reason = refusal_reason(job, self.allowed_functions)
        except Exception as exc:  # data that does not even deserialize is not a scanpool job either
            reason = f"job data cannot be read ({type(exc).__name__})"
        if reason is not None:
            return self._retrying(f"refusing job {job.id}", self.refuse_job, job, queue, reason)
        db.close_old_connections()
        try:
            return super().execute_job(job, queue)
        finally:
            db.reset_queries()
            db.close_old_connections()

    def refuse_job(self, job, queue, reason: str) -> None:
        """Fail ``job`` without running it: no import, no callback, no webhook, no retry."""
        log.warning("worker %s: refused job %s from %s: %s", self.name, job.id, queue.name, reason)
        job.retries_left = 0
        job._success_callback_name = job._failure_callback_name = job._stopped_callback_name = None
        job.webhooks = []
        self.prepare_execution(job)
        self.prepare_job_execution(job, remove_from_intermediate_queue=True)  # no-op unless it is there
        job.ended_at = datetime.now(UTC)
        exc_string = (f"{RefusedJobError.__module__}.{RefusedJobError.__name__}: refused, not run: {reason}. "
                      "scanpool enqueues only its own steps: whoever wrote this job can write to Redis "
                      "(see docs/security.md, Redis).")
        self.handle_job_failure(job, queue, started_job_registry=queue.started_job_registry, exc_string=exc_string)
        self.set_state(WorkerStatus.IDLE)
