"""Recovery: rebuild from the database whatever Redis or a dead worker lost (``manage.py reconcile``,
and periodically from the workers' scheduler). Safe to run at any time, next to running workers:
every action it takes is guarded by the same compare-and-set updates, locks and chain tokens the
steps use, so doing it twice (or racing a worker) changes nothing.

* queued tasks: the pool's dispatch is requested (a Redis flush loses no queued task: they live in
  the database);
* claimed tasks whose launch job vanished: the launch is enqueued again (job id = task id); the
  launch step finds an already created scan by its recorded id or by name, so nothing launches twice;
* running tasks whose poll chain vanished or stalled: a new chain resumes polling the *existing*
  scanner-side scan (its id is on the row); a link scheduled for later (a poll retried after a scanner's
  ``Retry-After``) is stalled only ``SCANPOOL_STALE_AFTER`` past its due time, so the scanner is not polled early,
  and a link waiting in its queue only that long after it was enqueued (a failing export's next round comes
  minutes after the task's last poll);
* tasks pending approval past their ``approval_expires_at`` are cancelled (SCANPOOL_APPROVAL_TTL);
* jobs left started by a dead worker are retried (RQ retries left) or dropped, never dead-lettered
  (:mod:`tasks.engine.abandoned`); the sections below rebuild a dropped step's work; failed jobs of an earlier
  attempt of a task retried since (its retry could not remove them: Redis was unreachable) are deleted;
* slots still held by finished tasks are released — except a timed-out/cancelled task whose scan may still
  run on the scanner within ``SCANPOOL_STOP_GRACE`` (its settle step is resumed if it vanished), and a cancelled
  task whose stop job was lost (Redis flushed, or down at the cancel) with a scan on the scanner: its stop step is
  enqueued again, however long ago the cancel was (the grace bounds a stop that was asked) — and
  ``active_scans`` is recomputed from the tasks;
* scans on the scanners that carry a scanpool task id unknown to the database are reported;
* every enabled scanner of the pool gets a health check (``scanners.health.check_health``), so a scanner
  flagged ``unlicensed``/``auth_failed``/``unreachable`` comes back into selection by itself once fixed,
  and an open breaker's scanner shows its current health — except a scanner waiting out a ``Retry-After``
  it answered (:mod:`scanners.pacing`): it is neither checked nor listed for orphans before its wait is over
  (the report says so). The periodic reconcile runs on the workers serving the pool (scanners sit in network
  zones).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, clean_registries

from pools.models import Pool
from scanners import breaker, pacing
from scanners.adapters import ScannerError
from scanners.health import check_health
from scanners.models import SELECTABLE_HEALTH, Scanner
from scanpool_site.redis_url import redis_problem
from tasks.engine import abandoned, chain, locks, lost
from tasks.engine.common import adapter_for
from tasks.engine.dispatch import JOB_ID as DISPATCH_JOB_ID
from tasks.engine.dispatch import dispatch_pool, enqueue_launch, request_dispatch
from tasks.engine.monitor import enqueue_stop, stop_job_id
from tasks.engine.settle import grace_start
from tasks.engine.slots import recompute_active
from tasks.engine.transitions import release_and_dispatch
from tasks.models import TERMINAL_STATUSES, ScanTask, TaskStatus
from tasks.policies.approval import expire_pending
from tasks.queues import SERIALIZER, get_connection, pool_launch_queue, pool_queue, pool_queues

log = logging.getLogger(__name__)

ALIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED})
CLAIM_GRACE = timedelta(seconds=10)


@dataclass
class ReconcileReport:
    pools: list[str] = field(default_factory=list)
    queued: int = 0
    relaunched: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    corrected: list[tuple[str, int, int]] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)
    health: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (scanner, until): not called, it asked to wait
    stale_letters: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # jobs queued in no queue (tasks.engine.lost), deleted

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The whole report: the summary, what was done or found, the notes, then the errors."""
        return [self.summary(), *self.done(), *self.notes(), *(f"error: {e}" for e in self.errors)]

    def summary(self) -> str:
        changes = len(self.done())
        what = [f"{changes} change(s) or finding(s)"] if changes else []
        what += [f"{len(self.waiting)} scanner(s) waiting (Retry-After)"] if self.waiting else []
        what += [f"{len(self.errors)} error(s)"] if self.errors else []
        outcome = ", ".join(what) or "nothing to do"
        return f"pools: {', '.join(self.pools) or '-'}; queued tasks: {self.queued}; {outcome}"

    def done(self) -> list[str]:
        """What the reconcile did or found (empty: everything was in order)."""
        out = [f"job abandoned by a dead worker: {j}" for j in self.abandoned]
        out += [f"dead letter of a retried task's earlier attempt: {j}" for j in self.stale_letters]
        out += [f"job queued in no queue (popped by a worker that never started it), deleted: {j}" for j in self.lost]
        out += [f"launch re-enqueued: {t}" for t in self.relaunched]
        out += [f"polling resumed: {t}" for t in self.resumed]
        out += [f"stop of a cancelled task enqueued again (its stop job was lost): {t}" for t in self.stopped]
        out += [f"slot released (finished task): {t}" for t in self.released]
        out += [f"active_scans of {name} corrected {old} -> {new}" for name, old, new in self.corrected]
        out += [f"ORPHAN scan {o['scan_id']} on {o['scanner']} ({o['status']}): {o['reason']}" for o in self.orphans]
        out += [f"health of {name}: {old} -> {new}" for name, old, new in self.health]
        out += [f"approval expired (cancelled): {t}" for t in self.expired]
        return out

    def notes(self) -> list[str]:
        """What is as it should be but worth a line from ``-v 1``: a scanner that asked scanpool to wait was left
        alone (nothing for cron to mail about: the scanner asked for it, and it ends by itself)."""
        return [f"scanner {name} not checked: it asked scanpool to wait until {until} (Retry-After)"
                for name, until in self.waiting]


def _job_alive(job_id: str | None, report: ReconcileReport) -> tuple[bool, str | None]:
    if not job_id:
        return False, None
    conn = get_connection()
    try:
        job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        return False, None
    status = job.get_status(refresh=False)
    if status == JobStatus.STARTED and locks.worker_dead(conn, job.worker_name):
        return False, status
    if status == JobStatus.QUEUED and lost.lost(conn, job):  # popped by a worker that never started it
        lost.drop(conn, job, "the reconcile does its work again")
        report.lost.append(job_id)
        return False, None
    return status in ALIVE, status


def _enqueued_at(job_id: str | None):
    """When the queued job ``job_id`` was put in its queue (None: gone meanwhile)."""
    try:
        return Job.fetch(job_id or "", connection=get_connection(), serializer=SERIALIZER).enqueued_at
    except NoSuchJobError:
        return None


def _scheduled_at(pool: Pool, job_id: str | None):
    """When the pool's scheduled step job ``job_id`` is due (None: not in the pool's scheduled registry)."""
    try:
        return ScheduledJobRegistry(queue=pool_queue(pool), serializer=SERIALIZER).get_scheduled_time(job_id or "")
    except NoSuchJobError:
        return None


def reconcile(pool_ids: list[int] | None = None, *, check_scanners: bool = True) -> ReconcileReport:
    report = ReconcileReport()
    pools = Pool.objects.all() if pool_ids is None else Pool.objects.filter(pk__in=pool_ids)
    for pool in pools:
        report.pools.append(pool.name)
        try:
            _reconcile_pool(pool, report, check_scanners=check_scanners)
        except Exception as exc:  # one pool's trouble must not stop the others
            log.exception("reconcile of pool %s failed", pool.name)
            problem = redis_problem(exc, settings.REDIS_URL) if isinstance(exc, RedisError) else (
                f"{type(exc).__name__}: {exc}")
            report.errors.append(f"pool {pool.name}: {problem}")
    return report  # the caller prints it (manage.py reconcile) or logs it (the workers' job): said once


def _reconcile_pool(pool: Pool, report: ReconcileReport, *, check_scanners: bool) -> None:
    now = timezone.now()
    for queue in pool_queues(pool):
        # Jobs a dead worker left started: retried (RQ retries left) or dropped — their work is rebuilt below from
        # the database —, never dead-lettered; before RQ's own sweep, which would fail those without retries.
        report.abandoned += abandoned.take_over_abandoned(queue)
        clean_registries(queue)
        report.abandoned += abandoned.drop_abandoned_failures(queue)  # what RQ's sweep (a worker's) failed so
        report.stale_letters += abandoned.drop_earlier_attempts(queue)  # a retry made while Redis was unreachable
    stale = timedelta(seconds=settings.SCANPOOL_STALE_AFTER)
    tasks = ScanTask.objects.filter(pool=pool)
    report.expired += expire_pending([pool.pk], now)  # scans nobody approved in time → cancelled

    for task in tasks.filter(status=TaskStatus.QUEUED, claimed_at__lt=now - CLAIM_GRACE):
        alive, _ = _job_alive(str(task.id), report)
        if not alive:
            pool_launch_queue(pool).failed_job_registry.remove(str(task.id))
            enqueue_launch(pool.pk, task.id)
            report.relaunched.append(str(task.id))

    for task in tasks.filter(status=TaskStatus.RUNNING):
        job_id = chain.current_job_id(task.id)
        alive, status = _job_alive(job_id, report)
        last = task.last_polled_at or task.started_at or task.updated_at
        if status == JobStatus.SCHEDULED:  # due later (a scanner's Retry-After, say): idle from its due time only
            last = max(filter(None, [last, _scheduled_at(pool, job_id)]), default=None)
        elif status == JobStatus.QUEUED:  # due and waiting for a worker (a failing export's next round, say,
            last = max(filter(None, [last, _enqueued_at(job_id)]), default=None)  # minutes after the last poll)
        if alive and status != JobStatus.STARTED and last and now - last > stale:
            alive = False  # scheduled/queued but nobody runs it (no scheduler, no worker): start over
        if not alive:
            chain.schedule(pool, task.id, "poll")
            report.resumed.append(str(task.id))

    grace = timedelta(seconds=settings.SCANPOOL_STOP_GRACE)
    for task in tasks.filter(status__in=TERMINAL_STATUSES, slot_held=True,
                             finished_at__lt=now - CLAIM_GRACE).select_related("assigned_scanner"):
        if task.status == TaskStatus.CANCELLED and _stop_again(pool, task, report):
            report.stopped.append(str(task.id))
            continue
        if task.status == TaskStatus.CANCELLED and _job_alive(stop_job_id(task.id), report)[0]:
            continue  # its stop step hands the slot to the settle step
        if task.scanner_scan_id is not None and grace_start(task) > now - grace:
            # Its scan may still run on the scanner: the settle step holds the slot until it is seen inactive (the
            # grace counts from the end of a Retry-After wait that outlasted the task: no stop could be asked before).
            if not _job_alive(chain.current_job_id(task.id), report)[0]:
                chain.schedule(pool, task.id, "settle")
                report.resumed.append(str(task.id))
            continue
        if release_and_dispatch(task.id):
            report.released.append(str(task.id))

    for scanner in Scanner.objects.filter(pool=pool):
        report.corrected += recompute_active(scanner.pk)

    report.queued += tasks.filter(status=TaskStatus.QUEUED, claimed_at__isnull=True).count()
    # Dispatch here and now, unconditionally: a dispatch request lost with Redis, or a dispatcher that died
    # holding the pool's lock, cannot keep queued tasks waiting past a reconcile.
    for job_id in (DISPATCH_JOB_ID.format(pool.pk), DISPATCH_JOB_ID.format(pool.pk) + "-again"):
        # A lost dispatch job (queued in no queue) would take every dispatch request for ever: requests coalesce.
        if lost.drop_if_lost(get_connection(), job_id, SERIALIZER, "the next dispatch request enqueues a new one"):
            report.lost.append(job_id)
    request_dispatch(pool.pk)  # bumps the counter: a live dispatcher holding the lock runs another round
    dispatch_pool(pool.pk)

    if check_scanners:
        for scanner in Scanner.objects.filter(pool=pool, enabled=True).order_by("name"):
            if (until := scanner.waiting_until) is not None:  # no call before the wait it asked for is over
                report.waiting.append((scanner.name, f"{until:%H:%M:%S} UTC"))
                continue
            if _check_health(scanner, report):
                _find_orphans(scanner, report)


def _stop_again(pool: Pool, task: ScanTask, report: ReconcileReport) -> bool:
    """Enqueue the stop step of a cancelled task again when it was lost (Redis flushed, or down when the cancel was
    made) and nothing follows the task now; True when it was. A scan may exist on the scanner — launched, or created
    by a launch killed mid-create — that no one ever asked to stop: ``SCANPOOL_STOP_GRACE`` bounds the wait for a
    stop that was asked, so releasing the slot past it would leave that scan running there, uncounted. The stop step
    asks (or removes the created scan) and hands the slot to the settle step. A stop job that failed on its own is a
    dead letter: not run again here (the slot is released as for any finished task)."""
    if task.scanner_scan_id is None and task.scanner_status != "creating":
        return False  # nothing was created on a scanner: the slot is simply released below
    alive, status = _job_alive(stop_job_id(task.id), report)
    if alive or status == JobStatus.FAILED or _job_alive(chain.current_job_id(task.id), report)[0]:
        return False
    pool_queue(pool).failed_job_registry.remove(stop_job_id(task.id))  # a dead worker's run RQ failed meanwhile
    enqueue_stop(pool.pk, task.id)
    return True


def _check_health(scanner: Scanner, report: ReconcileReport) -> bool:
    """Re-check a scanner's health; a change that makes it selectable again dispatches the pool. False when the
    scanner may not be called again now: it waits out a ``Retry-After`` (answered to this check, or to another call
    since the reconcile read the row), reported as waiting."""
    try:
        checked = check_health(scanner.pk)
    except Exception as exc:  # a bug or a broken row must not stop the rest of the reconcile
        log.exception("health check of scanner %s failed", scanner.name)
        report.errors.append(f"scanner {scanner.name}: health check failed: {type(exc).__name__}: {exc}")
        return True
    if (until := checked.waiting_until) is not None:
        report.waiting.append((scanner.name, f"{until:%H:%M:%S} UTC"))
        return False
    new = checked.status
    if new != scanner.health:
        report.health.append((scanner.name, scanner.health, new))
        if new in SELECTABLE_HEALTH and scanner.health not in SELECTABLE_HEALTH:
            request_dispatch(scanner.pool_id)
    if new in SELECTABLE_HEALTH and breaker.trial_now(scanner.pk):
        # After an outage the scanner answers again: its trial now, not at the end of the breaker cooldown.
        report.health.append((scanner.name, "breaker open", "trial due now"))  # the engine dispatches the pool
    return True


def _find_orphans(scanner: Scanner, report: ReconcileReport) -> None:
    try:
        with adapter_for(scanner) as adapter:
            remote = [scan for scan in adapter.list_scans() if scan.task_id is not None]
    except ScannerError as exc:
        if getattr(exc, "retry_after", None) is not None:  # it asked to wait: no new scan, no call before then
            pacing.record_wait(scanner, exc.retry_after)
        report.errors.append(f"scanner {scanner.name}: could not list scans: {exc}")
        return
    known = set(ScanTask.objects.filter(pk__in=[s.task_id for s in remote]).values_list("pk", flat=True))
    for scan in remote:
        if scan.task_id not in known:
            orphan = {"scanner": scanner.name, "scan_id": scan.scan_id, "name": scan.name, "status": scan.status,
                      "task_id": str(scan.task_id), "reason": f"carries scanpool task id {scan.task_id}, "
                      "unknown to the database (delete it on the scanner if it is not needed)"}
            report.orphans.append(orphan)
            log.warning("orphan scan %s on %s: %s", scan.scan_id, scanner.name, orphan["reason"])
