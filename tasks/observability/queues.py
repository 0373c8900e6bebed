"""What RQ holds, per pool: the pool queue's registries, the workers serving it, its failed jobs. Read over
rq's public API with the JSON serializer the queues use; the pools come from the database, so a pool created
in the admin appears at once (django-rq's static ``RQ_QUEUES`` would not know it)."""

from __future__ import annotations

import socket
from typing import Any

from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

from pools.models import Pool
from tasks.deadletters import task_id_of
from tasks.engine.locks import HEARTBEAT_STALE, worker_gone
from tasks.queues import SERIALIZER, get_connection, pool_queues

FAILED_SHOWN = 50


def overview() -> dict[str, Any]:
    conn = get_connection()
    workers = Worker.all(connection=conn, serializer=SERIALIZER)
    gone = {w.name for w in workers if worker_gone(w)}  # judged as /readyz and the reconcile judge them
    pools = []
    for pool in Pool.objects.order_by("name"):
        queues = pool_queues(pool, conn)  # the launch queue (dispatch, launch), then the step queue
        names = [q.name for q in queues]
        failed_ids = [job_id for q in queues for job_id in q.failed_job_registry.get_job_ids()]
        failed = []
        for job_id in failed_ids[-FAILED_SHOWN:][::-1]:  # newest first
            try:
                job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            except NoSuchJobError:
                continue
            result = job.latest_result()
            error = (result.exc_string if result is not None else "") or ""
            last_line = (error.strip().splitlines() or [""])[-1]
            failed.append({"id": job_id, "task_id": task_id_of(job_id), "function": job.func_name,
                           "ended_at": job.ended_at, "error": last_line})
        pools.append({
            "pool": pool,
            "queue": pool.queue_name,
            "queues": names,
            "queued": sum(q.count for q in queues),
            "started": sum(q.started_job_registry.count for q in queues),
            "scheduled": sum(q.scheduled_job_registry.count for q in queues),
            "deferred": sum(q.deferred_job_registry.count for q in queues),
            "finished": sum(q.finished_job_registry.count for q in queues),
            "failed": len(failed_ids),
            "failed_jobs": failed,
            "workers": [w.name for w in workers if w.name not in gone and set(names) & set(w.queue_names())],
        })
    return {
        "pools": pools,
        "workers": [{
            "name": w.name, "hostname": w.hostname, "pid": w.pid, "gone": w.name in gone,
            "state": _gone_state(w) if w.name in gone else w.get_state(),
            "queues": w.queue_names(), "current_job": w.get_current_job_id(), "heartbeat": w.last_heartbeat,
            "successful": w.successful_job_count, "failed": w.failed_job_count,
        } for w in sorted(workers, key=lambda w: (w.name in gone, w.name))],
        "live_workers": len(workers) - len(gone),
    }


def _gone_state(worker: Worker) -> str:
    """Why a registered worker counts as gone (its registration outlives it until RQ's key expires)."""
    if worker.death_date is not None:
        return "stopped"
    if worker.last_heartbeat is None:
        return "gone: no heartbeat"
    if worker.hostname == socket.gethostname():
        return "gone: process not running"
    return f"gone: no heartbeat for over {HEARTBEAT_STALE} s"
