"""Dead letters (DESIGN §4): step jobs in a pool queue's RQ ``FailedJobRegistry``, joined with their task rows.

No second dead-letter store: RQ's registry says *which* jobs failed for good (with their traceback), the
task row says *why* in words (``error_kind``, ``error_message``, its events). A task's job ids start with
its task id (``<task id>``, ``<task id>-poll-…``); other failed jobs (a pool's dispatch or reconcile) carry no
task and can only be purged — the periodic reconcile redoes their work. Retrying goes through
:func:`tasks.services.retry`, never a raw ``requeue``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job

from pools.models import Pool
from tasks import services
from tasks.engine.abandoned import drop_lost_executions
from tasks.errors import SubmissionError
from tasks.models import ScanTask, TaskStatus
from tasks.models.states import RETRYABLE_STATUSES
from tasks.queues import SERIALIZER, get_connection, pool_queues


def task_id_of(job_id: str) -> str | None:
    """The task id a job id starts with, or None for jobs of no task (dispatch, reconcile)."""
    try:
        return str(uuid.UUID(job_id[:36]))
    except ValueError:
        return None


@dataclass
class DeadLetter:
    pool: str
    task_id: str | None
    job_ids: list[str] = field(default_factory=list)
    task: ScanTask | None = None

    @property
    def key(self) -> str:
        return self.task_id or self.job_ids[0]

    def as_dict(self) -> dict[str, Any]:
        task = self.task
        return {
            "pool": self.pool,
            "task_id": self.task_id,
            "job_ids": self.job_ids,
            "in_failed_registry": bool(self.job_ids),
            "name": task.name if task else None,
            "status": task.status if task else None,
            "error_kind": task.error_kind if task else None,
            "error_message": task.error_message if task else None,
            "attempts": task.attempts if task else None,
            "finished_at": _iso(task.finished_at) if task else None,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _pools(pool: str | None) -> list[Pool]:
    if pool is None:
        return list(Pool.objects.order_by("name"))
    found = list(Pool.objects.filter(name=pool))
    if not found:
        known = ", ".join(Pool.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise LookupError(f"--pool {pool!r}: no such pool; known pools: {known}")
    return found


def failed_job_ids(pool: Pool) -> list[str]:
    """Failed jobs of both the pool's queues (launch jobs fail on the launch queue, other steps on the step queue)."""
    return [job_id for queue in pool_queues(pool) for job_id in queue.failed_job_registry.get_job_ids()]


def dead_letter_counts(pools: list[Pool]) -> dict[str, int]:
    """Per pool name: dead letters in RQ's registry (one per task, plus one per failed job of no task)."""
    return {pool.name: len({task_id_of(j) or j for j in failed_job_ids(pool)}) for pool in pools}


def list_dead_letters(*, pool: str | None = None, task: str | None = None, include_all: bool = False
                      ) -> list[DeadLetter]:
    """Dead letters, oldest failure first. ``include_all`` adds failed/timed-out tasks with no job left in
    the registry (failed credentials, entries expired after ``SCANPOOL_FAILURE_TTL``)."""
    wanted = _task_filter(task)
    letters: dict[tuple[str, str], DeadLetter] = {}
    for p in _pools(pool):
        for job_id in failed_job_ids(p):
            tid = task_id_of(job_id)
            if wanted and tid != wanted:
                continue
            letter = letters.setdefault((p.name, tid or job_id), DeadLetter(pool=p.name, task_id=tid))
            letter.job_ids.append(job_id)
        if include_all or wanted:
            rows = ScanTask.objects.filter(pool=p, status__in=RETRYABLE_STATUSES)
            if wanted:
                rows = rows.filter(pk=wanted)
            for tid in rows.values_list("pk", flat=True):
                letters.setdefault((p.name, str(tid)), DeadLetter(pool=p.name, task_id=str(tid)))
    rows = ScanTask.objects.in_bulk([lt.task_id for lt in letters.values() if lt.task_id])
    for letter in letters.values():
        if letter.task_id:
            letter.task = rows.get(uuid.UUID(letter.task_id))
    return sorted(letters.values(), key=lambda lt: (_iso(lt.task.finished_at) if lt.task else None) or "")


def _task_filter(task: str | None) -> str | None:
    if task is None:
        return None
    try:
        return str(uuid.UUID(task))
    except ValueError:
        raise LookupError(f"--task {task!r} is not a task id (a UUID like 3f2c…-…)") from None


def show(task: str) -> dict[str, Any]:
    """One dead letter in full: the task's error, each failed job's traceback, the task's timeline."""
    letters = list_dead_letters(task=task)
    if not letters:
        raise LookupError(f"task {task} is not a dead letter (not failed/timed out, no failed job)")
    letter = letters[0]
    doc = letter.as_dict()
    doc["jobs"] = [_job_detail(letter.pool, job_id) for job_id in letter.job_ids]
    doc["events"] = [
        {"at": _iso(e.created_at), "kind": e.kind, "from": e.from_status, "to": e.to_status, "message": e.message,
         "actor": e.actor}
        for e in (letter.task.events.all() if letter.task else [])
    ]
    return doc


def _job_detail(pool: str, job_id: str) -> dict[str, Any]:
    try:
        job = Job.fetch(job_id, connection=get_connection(), serializer=SERIALIZER)
    except NoSuchJobError:
        return {"job_id": job_id, "missing": True}
    result = job.latest_result()
    return {
        "job_id": job_id,
        "function": job.func_name,
        "description": job.description,
        "ended_at": _iso(job.ended_at),
        "traceback": (result.exc_string if result is not None else "") or "",
    }


def retry(letters: list[DeadLetter], *, actor: str, dry_run: bool = False) -> list[dict[str, Any]]:
    """Retry each letter's task through :func:`tasks.services.retry` (the row, its jobs and the timeline stay
    right). Letters without a task, or whose task is no longer failed/timed out, are reported, not retried."""
    outcome = []
    for letter in letters:
        entry = {"key": letter.key, "pool": letter.pool, "task_id": letter.task_id}
        if letter.task is None:
            entry["result"] = "skipped: no task row (purge it; the periodic reconcile redoes dispatch/reconcile work)"
        elif letter.task.status not in RETRYABLE_STATUSES:
            entry["result"] = f"skipped: task is {letter.task.status}"
            if letter.task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                entry["result"] += " (only failed or timed-out tasks are retried)"
        elif dry_run:
            entry["result"] = "would retry"
        else:
            try:
                task = services.retry(letter.task_id, actor=actor)
            except SubmissionError as exc:
                entry["result"] = f"error: {exc}"
            else:
                entry["result"] = f"retried (attempt {task.attempts})"
        outcome.append(entry)
    return outcome


def purge(letters: list[DeadLetter], *, dry_run: bool = False) -> int:
    """Delete the letters' failed jobs from RQ (the task rows stay: ``cleanup_tasks`` expires them)."""
    n = 0
    by_pool = {p.name: p for p in Pool.objects.filter(name__in={lt.pool for lt in letters})}
    for letter in letters:
        registries = [q.failed_job_registry for q in pool_queues(by_pool[letter.pool])]
        for job_id in letter.job_ids:
            n += 1
            if dry_run:
                continue
            for registry in registries:
                if job_id not in registry:
                    continue
                try:
                    job = Job.fetch(job_id, connection=get_connection(), serializer=SERIALIZER)
                except NoSuchJobError:
                    registry.remove(job_id)
                    continue
                drop_lost_executions(job)  # a dead worker's execution would make RQ's delete raise
                registry.remove(job_id, delete_job=True)  # by id: the registry's job class is PoolJob
    return n


def stats(*, pool: str | None = None) -> list[dict[str, Any]]:
    """Per pool: dead letters in the registry, failed/timed-out task rows by error kind, oldest failure."""
    out = []
    for p in _pools(pool):
        letters = list_dead_letters(pool=p.name)
        by_kind: dict[str, int] = {}
        for letter in letters:
            kind = (letter.task.error_kind or "unknown") if letter.task else "no task"
            by_kind[kind] = by_kind.get(kind, 0) + 1
        finished = [lt.task.finished_at for lt in letters if lt.task and lt.task.finished_at]
        out.append({
            "pool": p.name,
            "dead_letters": len(letters),
            "failed_jobs": sum(len(lt.job_ids) for lt in letters),
            "by_error_kind": by_kind,
            "failed_or_timeout_tasks": ScanTask.objects.filter(pool=p, status__in=RETRYABLE_STATUSES).count(),
            "oldest_failure": _iso(min(finished)) if finished else None,
        })
    return out
