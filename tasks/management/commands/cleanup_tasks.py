"""``manage.py cleanup_tasks [--dry-run] [--older-than DURATION] [--status S …]`` — TTL housekeeping.

The logic is in :mod:`tasks.cleanup`; output by verbosity (cron): :mod:`scanpool_site.ops_command`. The workers
also run it daily (``tasks.jobs.cleanup_tasks``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from scanpool_site.ops_command import OpsCommand
from tasks.cleanup import CLEANABLE, cleanup_tasks, parse_duration, parse_statuses


class Command(OpsCommand):
    help = ("Delete finished tasks past their TTL (from their last access; completed: SCANPOOL_TTL_COMPLETED_DAYS, "
            "failed/timeout/cancelled: SCANPOOL_TTL_FAILED_DAYS), their result files and RQ leftovers. "
            "Never touches queued or running tasks.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument("--older-than", metavar="DURATION",
                            help="one age for every selected status instead of the TTL settings, e.g. 12h, 7d, 2w")
        parser.add_argument("--status", action="append", metavar="STATUS",
                            help=f"only these statuses (repeat or comma-separate): {', '.join(CLEANABLE)}")
        parser.add_argument("--json", action="store_true", help="print the counts as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            older_than = parse_duration(options["older_than"]) if options["older_than"] else None
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        try:
            statuses = parse_statuses(options["status"])
        except ValueError as exc:
            raise CommandError(f"--status: {exc}") from None
        report = cleanup_tasks(statuses=statuses, older_than=older_than, dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif self.verbosity >= 2:
            self.stdout.write("\n".join(report.lines()))
        else:  # cron: -v 0 prints only what was deleted; the default adds one summary line
            self.done(report.done())
            self.summary(report.summary())
        if report.errors:  # what it did is printed above; the run stopped early
            raise CommandError("; ".join(report.errors))
