"""``manage.py dlq list|show|retry|refetch|purge|stats`` — dead letters (RQ's FailedJobRegistry + task rows).

The logic is in :mod:`tasks.deadletters`; retries go through ``tasks.services.retry``, ``refetch`` (the results of
a completed scan fetched again, no new scan) through ``tasks.refetch.refetch``. Output by verbosity
(cron): :mod:`scanpool_site.ops_command`.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from scanpool_site.ops_command import OpsCommand
from scanpool_site.redis_url import redacted, redis_problem
from tasks import deadletters, refetch
from tasks.errors import SubmissionError


def interactive() -> bool:
    """Someone at a terminal can answer the purge's question."""
    return sys.stdin is not None and sys.stdin.isatty()


def _cut(message: str, limit: int = 100) -> str:
    """One list line's error: whole when short, else cut with '…' (`dlq show --task ID` has all of it)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit].rstrip() + "…"


class Command(OpsCommand):
    help = ("Dead letters: list, show (error, traceback, timeline), retry (through tasks.services.retry), refetch "
            "(--task ID: fetch the results of its completed scan again, no new scan), purge (remove the failed jobs; "
            "asks unless --yes), stats.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "show", "retry", "refetch", "purge", "stats"])
        parser.add_argument("--pool", help="only this pool")
        parser.add_argument("--task", help="only this task id (show needs it)")
        parser.add_argument("--all", action="store_true",
                            help="list/stats: also failed or timed-out tasks with no failed job left in RQ; "
                                 "retry/purge: every dead letter selected by --pool (instead of one --task)")
        parser.add_argument("--dry-run", action="store_true",
                            help="retry/refetch/purge: say what would be done, do nothing")
        parser.add_argument("--yes", action="store_true", help="purge: do not ask for confirmation")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except LookupError as exc:
            raise CommandError(str(exc.args[0] if exc.args else exc)) from None
        except redis.RedisError as exc:  # the failed jobs live in Redis: say so, not a traceback
            raise CommandError(f"cannot read the dead letters: Redis at {redacted(settings.REDIS_URL)} answered "
                               f"{redis_problem(exc, settings.REDIS_URL)}") from None

    def _out(self, options: dict, doc: Any, lines: list[str], *, empty: str = "no dead letters") -> None:
        """JSON, or the lines found / done; ``empty`` (a summary line: not with -v 0) when there are none."""
        if options["json"]:
            self.stdout.write(json.dumps(doc, indent=2, default=str))
        elif lines:
            self.done(lines)
        else:
            self.summary(empty)

    def _selected(self, options: dict, *, for_action: str) -> list[deadletters.DeadLetter]:
        if for_action in ("retry", "purge") and not options["task"] and not options["all"]:
            raise CommandError(f"{for_action}: name one dead letter with --task ID, or every one (of --pool P) "
                               "with --all")
        letters = deadletters.list_dead_letters(pool=options["pool"], task=options["task"],
                                                include_all=options["all"] and for_action == "list")
        if options["task"] and not letters:
            raise CommandError(f"no dead letter for task {options['task']} (see `dlq list`; `dlq list --all` also "
                               "shows failed tasks with no failed job left)")
        return letters

    def _list(self, options: dict) -> None:
        letters = self._selected(options, for_action="list")
        lines = [
            f"{lt.key}  pool={lt.pool}  status={lt.task.status if lt.task else '-'}  "
            f"error={(lt.task.error_kind or '-') if lt.task else '-'}  jobs={len(lt.job_ids)}  "
            f"{(_cut(lt.task.error_message) if lt.task else 'no task row (a dispatch/reconcile job)')}"
            for lt in letters
        ]
        self._out(options, [lt.as_dict() for lt in letters], lines)

    def _show(self, options: dict) -> None:
        if not options["task"]:
            raise CommandError("show: give the dead letter's task id with --task ID (see `dlq list`)")
        doc = deadletters.show(options["task"])
        lines = [
            f"task      {doc['task_id']}  ({doc['name']})",
            f"pool      {doc['pool']}",
            f"status    {doc['status']}  attempts {doc['attempts']}  finished {doc['finished_at']}",
            f"error     [{doc['error_kind'] or '-'}] {doc['error_message'] or '-'}",
        ]
        for job in doc["jobs"]:
            lines += ["", f"job {job['job_id']}" + (" (gone from Redis)" if job.get("missing") else
                                                    f"  {job['function']}  ended {job['ended_at']}")]
            lines += ["  " + line for line in (job.get("traceback") or "").rstrip().splitlines()]
        lines += ["", "timeline:"]
        lines += [f"  {e['at']}  {e['kind']:<8} " + (f"{e['from'] or '-'} → {e['to']}: " if e["to"] else "")
                  + f"{e['message']}  ({e['actor'] or '-'})" for e in doc["events"]]
        self._out(options, doc, lines)

    def _retry(self, options: dict) -> None:
        letters = self._selected(options, for_action="retry")
        actor = f"dlq retry ({getpass.getuser()})"
        outcome = deadletters.retry(letters, actor=actor, dry_run=options["dry_run"])
        self._out(options, outcome, [f"{o['key']}  {o['result']}" for o in outcome])

    def _refetch(self, options: dict) -> None:
        """One task (``--task``): it may be a timed-out task with no failed job left, which is no dead letter."""
        if not options["task"] or options["all"]:
            raise CommandError("refetch: name one task with --task ID (its scan completed on its scanner; its "
                               "results could not be fetched)")
        try:
            if options["dry_run"]:
                why = refetch.refusal(refetch.load(options["task"]))
                result = f"would not fetch: {why}" if why else "would fetch the results again"
            else:
                task = refetch.refetch(options["task"], actor=f"dlq refetch ({getpass.getuser()})")
                result = (f"fetching the results of scan {task.scanner_scan_id} again (no new scan), until "
                          f"{task.deadline_at:%H:%M:%S} UTC")
        except SubmissionError as exc:
            raise CommandError(f"refetch: {exc.message}") from None
        self._out(options, {"task_id": options["task"], "result": result}, [f"{options['task']}  {result}"])

    def _purge(self, options: dict) -> None:
        letters = self._selected(options, for_action="purge")
        jobs = sum(len(lt.job_ids) for lt in letters)
        if not letters:
            self._out(options, {"purged_jobs": 0}, [])
            return
        if not options["yes"] and not options["dry_run"]:
            try:
                if not interactive():  # cron: no prompt on stdout (it would be mailed) and nobody to answer
                    raise EOFError
                answer = input(f"Delete {jobs} failed job(s) of {len(letters)} dead letter(s) from RQ? "
                               "The task rows stay. [y/N] ")
            except EOFError:  # no terminal (cron): nobody can answer
                raise CommandError("purge: no terminal to confirm on: add --yes (or --dry-run first)") from None
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("purge aborted: nothing deleted")
        n = deadletters.purge(letters, dry_run=options["dry_run"])
        verb = "would delete" if options["dry_run"] else "deleted"
        self._out(options, {"purged_jobs": 0 if options["dry_run"] else n, "dry_run": options["dry_run"]},
                  [f"{verb} {n} failed job(s) of {len(letters)} dead letter(s)"])

    def _stats(self, options: dict) -> None:
        rows = deadletters.stats(pool=options["pool"])

        def line(r: dict) -> str:
            return (f"{r['pool']:<20} dead letters {r['dead_letters']:>4}  failed jobs {r['failed_jobs']:>4}  "
                    f"failed/timed-out tasks {r['failed_or_timeout_tasks']:>4}  oldest {r['oldest_failure'] or '-'}  "
                    + ", ".join(f"{k}={v}" for k, v in sorted(r["by_error_kind"].items())))

        # Failed/timed-out tasks with no failed job left are not dead letters (`dlq list --all` shows them): they stay
        # until the TTL clean-up, and listing them at -v 0 would have cron mail the same lines every day.
        busy = [r for r in rows if r["dead_letters"] or r["failed_jobs"]]
        if options["json"]:
            self._out(options, rows, [])
            return
        # Pools with nothing to report only from -v 2 (cron: a pool without dead letters is not news).
        self.done([line(r) for r in busy])
        self.summary(f"dead letters in {len(busy)} of {len(rows)} pool(s)" if busy
                     else f"no dead letters ({len(rows)} pool(s))")
        self.detail([line(r) for r in rows if r not in busy])
