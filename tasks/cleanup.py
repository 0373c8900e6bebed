"""TTL housekeeping: delete finished tasks nobody has looked at for a while, with their results files and
what RQ still holds for them. Never touches queued or running tasks (a status re-check guards every delete), nor a
finished task that still holds its scanner slot (a cancelled or timed-out scan still being stopped and settled:
deleting it would lose the stop, and the scanner would run a scan nobody counts).

A task's age is measured from its last access (``last_accessed_at``; ``finished_at`` when never accessed, or when
it was last read before it finished: a read while queued or running, or before a retry, does not age its results).
Defaults: completed 7 days (``SCANPOOL_TTL_COMPLETED_DAYS``), failed / timeout / cancelled 30 days
(``SCANPOOL_TTL_FAILED_DAYS``). Deletions are counted in ``nessus_ttl_deletions_total`` in the same
transaction, so the metric never goes down and never counts a rolled-back delete.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from pools.models import Pool
from scanpool_site.redis_url import redacted, redis_problem
from tasks.deadletters import task_id_of
from tasks.engine.abandoned import drop_lost_executions_of
from tasks.engine.chain import CHAIN_KEY
from tasks.models import ScanTask, TaskStatus
from tasks.observability.totals import record_ttl_deletions
from tasks.queues import SERIALIZER, get_connection, pool_queues
from tasks.results.storage import results_path

log = logging.getLogger(__name__)

CLEANABLE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED)
BATCH_SIZE = 500
TMP_EXPORT_GRACE = timedelta(hours=1)  # a temporary export younger than this may still be written or read
_TMP_EXPORT = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-[0-9a-f]+\.nessus$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``"90m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``"30s"`` → timedelta; ValueError naming the fix otherwise."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a whole number and a unit, e.g. 30s, 90m, 12h, 7d, 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_statuses(values: list[str] | None) -> list[str]:
    if not values:
        return list(CLEANABLE)
    statuses = [s.strip() for v in values for s in v.split(",") if s.strip()]
    for status in statuses:
        if status not in CLEANABLE:
            raise ValueError(f"{status!r} cannot be cleaned up: choose among {', '.join(CLEANABLE)} "
                             "(queued and running tasks are never deleted)")
    return list(dict.fromkeys(statuses))


def next_daily_run(at: str, now: datetime) -> datetime:
    """The next ``HH:MM`` (UTC) strictly after ``now``."""
    try:
        hour, minute = (int(x) for x in at.split(":"))
        run = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise ValueError(f"SCANPOOL_CLEANUP_AT={at!r}: expected HH:MM (UTC), e.g. 03:30") from None
    return run if run > now else run + timedelta(days=1)


def default_ttl(status: str) -> timedelta:
    days = settings.SCANPOOL_TTL_COMPLETED_DAYS if status == TaskStatus.COMPLETED else settings.SCANPOOL_TTL_FAILED_DAYS
    return timedelta(days=days)


@dataclass
class CleanupReport:
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)  # or "would delete" with dry_run
    files: int = 0
    rq_entries: int = 0
    tmp_exports: int = 0  # stale temporary exports removed (left by workers killed in a finish step)
    cutoffs: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the run stopped early (Redis unreachable)

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "tasks": self.deleted, "total": sum(self.deleted.values()),
                "result_files": self.files, "rq_entries": self.rq_entries, "tmp_exports": self.tmp_exports,
                "cutoffs": self.cutoffs,
                "errors": self.errors}

    def lines(self) -> list[str]:
        """Every status with its count and cutoff, then the totals (``-v 2``)."""
        return [*self._status_lines(self.deleted), self.summary()]

    def done(self) -> list[str]:
        """The statuses of which something was (or would be) deleted, and the stale temporary exports."""
        verb = "would delete" if self.dry_run else "deleted"
        tmp = [f"{verb} {self.tmp_exports} stale temporary export(s) (left by workers that died while fetching "
               "results)"] if self.tmp_exports else []
        return self._status_lines({status: n for status, n in self.deleted.items() if n}) + tmp

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {sum(self.deleted.values())} task(s), {self.files} result file(s), "
                f"{self.rq_entries} RQ entr(y/ies)")

    def _status_lines(self, counts: dict[str, int]) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        return [f"{verb} {n} {status} task(s) (last access before {self.cutoffs[status]})"
                for status, n in counts.items()]


def expired(status: str, cutoff: datetime) -> QuerySet[ScanTask]:
    # A read before the task finished (polled while queued or running, or before a retry) does not age it: its
    # age counts from the later of its last access and its finish, so results nobody has fetched yet stay.
    finished = Coalesce(F("finished_at"), F("updated_at"))
    return (ScanTask.objects.filter(status=status, slot_held=False)
            .annotate(touched=Greatest(Coalesce(F("last_accessed_at"), finished), finished))
            .filter(touched__lt=cutoff))


def cleanup_tasks(*, statuses: list[str] | None = None, older_than: timedelta | None = None,
                  dry_run: bool = False, batch_size: int = BATCH_SIZE) -> CleanupReport:
    """Delete expired finished tasks (see the module docstring); returns counts per status."""
    now = timezone.now()
    report = CleanupReport(dry_run=dry_run)
    for status in parse_statuses(statuses):
        cutoff = now - (older_than if older_than is not None else default_ttl(status))
        report.cutoffs[status] = cutoff.isoformat(timespec="seconds")
        report.deleted[status] = 0
        if dry_run:
            report.deleted[status] = expired(status, cutoff).count()
            report.files += sum(1 for tid in expired(status, cutoff).values_list("pk", flat=True)
                                if results_path(tid).exists())
            continue
        while True:
            ids = list(expired(status, cutoff).order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            try:
                n, files, rq_entries = _delete_batch(ids, status, cutoff)
            except RedisError as exc:  # the batch's rows stay (rolled back): the next run deletes them
                report.errors.append(f"Redis at {redacted(settings.REDIS_URL)} answered "
                                     f"{redis_problem(exc, settings.REDIS_URL)}: stopped, nothing more deleted "
                                     "(the next run goes on)")
                return report
            report.deleted[status] += n
            report.files += files
            report.rq_entries += rq_entries
            if n == 0:
                break  # all of them changed status meanwhile (retried): nothing more to do with this batch
    report.tmp_exports = sweep_tmp_exports(dry_run=dry_run)
    return report  # the caller prints it (manage.py cleanup_tasks) or logs it (the workers' daily job)


def sweep_tmp_exports(*, dry_run: bool = False) -> int:
    """Remove the temporary exports (``<results dir>/tmp/<task id>-<random>.nessus``, written by the finish step) that
    a worker killed in the middle of fetching or ingesting them left behind: the retried finish writes its own.
    Only files older than :data:`TMP_EXPORT_GRACE` whose task is no longer queued or running (or is gone)."""
    tmp_dir = Path(settings.SCANPOOL_RESULTS_DIR) / "tmp"
    if not tmp_dir.is_dir():
        return 0
    cutoff = time.time() - TMP_EXPORT_GRACE.total_seconds()
    stale: dict[str, list[Path]] = {}
    for path in tmp_dir.iterdir():
        match = _TMP_EXPORT.match(path.name)
        try:
            if match and path.is_file() and path.stat().st_mtime < cutoff:
                stale.setdefault(match.group(1), []).append(path)
        except FileNotFoundError:
            continue  # removed meanwhile (its finish ended)
    busy = {str(pk) for pk in ScanTask.objects.filter(pk__in=list(stale), status__in=(TaskStatus.QUEUED,
                                                                                         TaskStatus.RUNNING))
            .values_list("pk", flat=True)}
    doomed = [path for task_id, paths in stale.items() if task_id not in busy for path in paths]
    if not dry_run:
        for path in doomed:
            path.unlink(missing_ok=True)
    return len(doomed)


def _delete_batch(ids: list[uuid.UUID], status: str, cutoff: datetime) -> tuple[int, int, int]:
    """Delete one batch: its RQ leftovers first, then its rows, in one transaction, so a Redis error (raised) rolls
    the rows back instead of leaving their failed jobs and chain keys in Redis with no row to find them by."""
    with transaction.atomic():
        # Re-check status and age inside the transaction: a task retried meanwhile is queued again and stays.
        doomed = expired(status, cutoff).filter(pk__in=ids).select_for_update()
        rows = list(doomed.values_list("pk", "pool_id"))
        doomed_ids = [pk for pk, _ in rows]
        rq_entries = _forget_in_rq({str(pk) for pk in doomed_ids}, {pool for _, pool in rows})
        ScanTask.objects.filter(pk__in=doomed_ids, status=status).delete()
        record_ttl_deletions({status: len(doomed_ids)})
    files = 0
    for pk in doomed_ids:
        path = results_path(pk)
        if path.exists():
            path.unlink(missing_ok=True)
            files += 1
    return len(doomed_ids), files, rq_entries


def _forget_in_rq(task_ids: set[str], pool_ids: set[int]) -> int:
    """Remove what RQ keeps for deleted tasks: failed jobs, finished jobs, the poll-chain key."""
    if not task_ids:
        return 0
    conn = get_connection()
    n = 0
    for pool in Pool.objects.filter(pk__in=pool_ids):
        registries = [r for q in pool_queues(pool)
                      for r in (q.failed_job_registry, q.finished_job_registry, q.canceled_job_registry)]
        for registry in registries:
            for job_id in registry.get_job_ids():
                if task_id_of(job_id) in task_ids:
                    drop_lost_executions_of(job_id, conn)  # else RQ's delete may fail on a dead run's record
                    try:
                        registry.remove(job_id, delete_job=True)
                    except NoSuchJobError:
                        registry.remove(job_id)
                    n += 1
    for tid in task_ids:
        for job_id in (tid, f"{tid}-stop"):
            drop_lost_executions_of(job_id, conn)
            try:
                Job.fetch(job_id, connection=conn, serializer=SERIALIZER).delete()
                n += 1
            except NoSuchJobError:
                pass
        n += conn.delete(CHAIN_KEY.format(tid))
    return n
