"""``manage.py reconcile [--pools a,b] [--no-scanners]``: rebuild lost jobs and slots from the database.

Output by verbosity (cron): :mod:`scanpool_site.ops_command`."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from scanpool_site.ops_command import OpsCommand
from tasks.engine.recovery import reconcile
from tasks.worker import resolve_pools


class Command(OpsCommand):
    help = ("Re-enqueue work Redis lost (flush, dead workers), free slots of finished tasks, recompute "
            "scanner slot counters and report scans on scanners unknown to the database. Safe next to workers.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pools", default=None, help="Comma-separated pool names (default: all).")
        parser.add_argument("--no-scanners", action="store_true",
                            help="Do not contact the scanners (skips the orphan-scan report).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        names = [n.strip() for n in (options["pools"] or "").split(",") if n.strip()]
        try:
            pools = resolve_pools(names)
        except ValueError as exc:
            raise CommandError(f"--pools: {exc}") from None
        report = reconcile([p.pk for p in pools], check_scanners=not options["no_scanners"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:  # cron: -v 0 prints only what was done or found; the default adds one summary line
            self.summary(report.summary())
            self.done(report.done())
            self.notes(report.notes())  # a Retry-After wait the scanner asked for: nothing to mail about at -v 0
            self.errors([f"error: {e}" for e in report.errors])
        if report.errors:  # exit status 1: a cron job or a monitor must see that it did not do its work
            raise CommandError(f"{len(report.errors)} error(s) during reconcile (see above): the report is incomplete")
