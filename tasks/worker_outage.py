"""How a scan worker lives through a Redis outage, and keeps its RQ registration whole.

RQ's worker retries only a failed *dequeue* (with backoff); any other Redis call that fails — a step
scheduling its next link, RQ's bookkeeping after a job, a heartbeat, a state change — ends its work loop
("found an unhandled exception, quitting...") and the process with it. :class:`RedisOutageMixin` wraps
each Redis-touching stage of RQ's loop instead:

* the stage's connection error is logged once, then the worker waits with capped backoff (1, 2, 4, 8, 15 s)
  until Redis answers (a reminder every ``REMIND_EVERY`` s), registers itself again (a fresh RQ registration
  under the same name: the old one is gone with an empty Redis, or stale in a restored one) and carries on;
  a stop signal during the wait stops the worker as usual;
* the step job that was running is handed back to RQ the way RQ's own registry sweep hands back a job
  abandoned by a dead worker (:meth:`rq.worker.BaseWorker.handle_job_failure`: retried when it has retries
  left; with none left, :class:`tasks.engine.abandoned.PoolJob` drops it — an interrupted run is no failure and
  no dead letter) — when Redis still has it (a restart with its data). When Redis came back empty the job is gone
  with it. Either way its work lives in the database and the periodic reconcile re-creates it (steps are
  re-runnable, a launch never launches twice: ``docs/architecture.md``);
* before that, what the job left undone in Redis on its way out is done (:mod:`tasks.engine.after_outage`): a lock
  it could not release is released (a pool's dispatch lock waited for its TTL, 30 s, restored with Redis's data,
  and the pool's dispatch request made again), a launch it could not enqueue after a claim is enqueued;
* a worker whose hash lost its identity fields (a ``FLUSHALL`` while it ran: heartbeats alone re-create a hash
  with ``last_heartbeat``, ``state``, ``current_job``) writes its whole registration again at its next heartbeat,
  so ``Worker.all`` lists it and the same-host pid check of :func:`tasks.engine.locks.worker_dead` works;
* a job popped from its queue whose data could not be read because Redis went away at that moment (RQ's
  ``dequeue_any`` pops the id with ``BLPOP``, then reads the job: RQ logs the error and dequeues again, and the
  popped id was in no list any more — the job, ``queued`` for ever, was lost, and a launch or a dispatch request
  that found it ``queued`` waited for it) is pushed back to the front of its queue once Redis answers
  (:class:`tasks.engine.abandoned.PoolQueue`, the class of every scanpool queue);
* a job in progress keeps the worker's heartbeat going (every ``BUSY_HEARTBEAT`` s, as RQ's forking worker does
  from its monitor loop): a live worker's heartbeat is never older than that, which is what ``worker_dead``
  relies on for a worker it cannot check by pid.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from rq import worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from tasks.engine import after_outage
from tasks.engine.abandoned import INTERRUPTED
from tasks.engine.locks import BUSY_HEARTBEAT

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError (a restart loading data) included
BACKOFF_CAP = 15.0  # seconds between attempts to reach Redis, at most
REMIND_EVERY = 300  # seconds between "still waiting" lines during a long outage

T = TypeVar("T")


class RedisOutageMixin:
    """Mixed into an RQ ``SimpleWorker`` subclass (see the module docstring)."""

    # Provided by rq's BaseWorker.
    connection: redis.Redis
    name: str
    key: str
    worker_ttl: int
    _stop_requested: bool

    # -------------------------------------------------------------------------------- waiting for Redis
    def _wait_for_redis(self, exc: Exception, what: str) -> bool:
        """Block until Redis answers again, then register again; ``False`` when a stop was requested instead."""
        log.warning("worker %s: Redis unreachable while %s (%s: %s); waiting for it (retrying every %d s at most)",
                    self.name, what, type(exc).__name__, exc, BACKOFF_CAP)
        started = last_note = time.monotonic()
        delay = 1.0
        while not self._stop_requested:
            try:
                time.sleep(delay)
                self.connection.ping()
                self._register_again(fresh=True)
                self.after_reconnect()
                after_outage.redo()  # locks and launches the interrupted job left: before it is handed back
            except REDIS_DOWN:  # also raised by RQ's stop-signal handler, which records the request in Redis
                delay = min(delay * 2, BACKOFF_CAP)
                if time.monotonic() - last_note >= REMIND_EVERY:
                    last_note = time.monotonic()
                    log.warning("worker %s: still waiting for Redis (%d s)", self.name, last_note - started)
                continue
            log.warning("worker %s: Redis is back after %d s; registered again, carrying on",
                        self.name, time.monotonic() - started)
            return True
        log.warning("worker %s: stop requested while waiting for Redis", self.name)
        return False

    def _retrying(self, what: str, func: Callable[..., T], *args: Any) -> T | None:
        """``func(*args)``, waiting out Redis outages; ``None`` when a stop was requested meanwhile."""
        while True:
            try:
                return func(*args)
            except REDIS_DOWN as exc:
                if not self._wait_for_redis(exc, what):
                    return None

    def _register_again(self, *, fresh: bool) -> None:
        """Write the whole registration (``birth``, ``hostname``, ``pid``, queues, …) and the worker sets again.
        ``fresh``: drop what the hash held (a restored, stale one); else keep ``state`` and ``current_job``."""
        self.last_heartbeat = now()
        if self.birth_date is None:  # Redis went away before RQ's register_birth wrote it
            self.birth_date = self.last_heartbeat
        with self.connection.pipeline() as pipe:
            if fresh:
                pipe.delete(self.key)
            pipe.hset(self.key, mapping=self.serialize())
            if fresh:
                pipe.hset(self.key, "state", self.get_state())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def after_reconnect(self) -> None:
        """Hook: what the worker redoes once Redis is back (the pool worker checks its scheduler)."""

    # ------------------------------------------------------------------------ RQ's start-up, wrapped
    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """RQ's start-up (registration, pubsub channel, state) runs before its loop, outside its error handling:
        Redis going away in the middle made the worker exit. It waits for Redis (which registers the worker again)
        and finishes the start-up."""
        try:
            return super().bootstrap(*args, **kwargs)
        except REDIS_DOWN as exc:
            if not self._wait_for_redis(exc, "starting"):
                return None
        self._retrying("starting", self._finish_start)
        return None

    def _finish_start(self) -> None:
        if getattr(self, "pubsub_thread", None) is None:
            self.subscribe()
        self.set_state(WorkerStatus.STARTED)

    # ------------------------------------------------------------------------ RQ's work loop, wrapped
    def check_for_suspension(self, burst: bool) -> None:
        self._retrying("checking for suspension", super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self._retrying("cleaning the registries", super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        return self._retrying("waiting for work", super().dequeue_job_and_maintain_ttl, timeout, max_idle_time)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        if pipeline is not None:  # part of RQ's own transaction: it handles the outcome
            return super().heartbeat(timeout, pipeline)
        self._retrying("sending a heartbeat", self._checked_heartbeat, timeout)
        return None

    def _checked_heartbeat(self, timeout: int | None = None) -> None:
        """RQ's heartbeat; a hash found without its ``birth`` (re-created by heartbeats after a flush) is
        completed at once."""
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipe)
            pipe.hexists(self.key, "birth")
            whole = pipe.execute()[-1]
        if not whole:
            log.warning("worker %s: its registration in Redis was incomplete (Redis flushed?); registering again",
                        self.name)
            self._register_again(fresh=False)

    def execute_job(self, job: Job, queue: Queue) -> Any:
        stop = threading.Event()
        beat = threading.Thread(target=self._beat_while_busy, args=(stop, self.get_heartbeat_ttl(job)),
                                name=f"heartbeat-{self.name}", daemon=True)
        beat.start()
        try:
            return super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            stop.set()
            if self._wait_for_redis(exc, f"running job {job.id} ({job.description})"):
                self._retrying(f"handing back job {job.id}", self._hand_back, job, queue)
            return None
        finally:
            stop.set()
            beat.join(5)
            if after_outage.pending():  # a job that caught a Redis error itself and ended normally
                after_outage.redo()

    def _beat_while_busy(self, stop: threading.Event, ttl: int) -> None:
        while not stop.wait(BUSY_HEARTBEAT):
            try:
                self._checked_heartbeat(ttl)
            except redis.RedisError:  # the job's own Redis calls meet the outage too: the main thread handles it
                pass

    def _hand_back(self, job: Job, queue: Queue) -> None:
        """The job was interrupted by the outage: retried through RQ, or dropped, when Redis still has it."""
        if Job.exists(job.id, connection=self.connection):
            log.warning("worker %s: job %s was interrupted by the Redis outage; handing it back to RQ "
                        "(retried if it has retries left, else dropped; the reconcile resumes the task)",
                        self.name, job.id)
            self.handle_job_failure(job, queue, started_job_registry=queue.started_job_registry,
                                    exc_string=f"{INTERRUPTED} while worker {self.name} ran it")
        else:
            log.warning("worker %s: job %s was lost with Redis; the periodic reconcile re-creates its work from the "
                        "database", self.name, job.id)
        self.set_current_job_id(None)
        self.set_state(WorkerStatus.IDLE)

    def teardown(self) -> None:
        try:
            super().teardown()
        except REDIS_DOWN as exc:
            log.warning("worker %s: could not record its end in Redis (%s); its registration expires by itself",
                        self.name, exc)
