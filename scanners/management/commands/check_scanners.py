"""``manage.py check_scanners [--pool P] [--include-waiting]``: check every scanner's health now and print a table.
Exit status 1 when an enabled scanner is not ready (for cron and monitors), 0 when all are. ``-v 0`` prints nothing
when all are ready (:mod:`scanpool_site.ops_command`).

A scanner waiting out a ``Retry-After`` it answered is not called (this command runs from cron): its row says
``waiting`` until when, and it does not make the exit status 1. ``--include-waiting`` calls it anyway (an operator
who wants to know now); a ``Retry-After`` answered to any check is recorded as a wait (``scanners.health``)."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from pools.models import Pool
from scanners.health import check_all
from scanners.models import Health
from scanpool_site.ops_command import OpsCommand


class Command(OpsCommand):
    help = "Check the health of every scanner (or one pool's) and record it; prints a table."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", help="Only the scanners of this pool.")
        parser.add_argument("--include-waiting", action="store_true",
                            help="Also call scanners that asked scanpool to wait (HTTP 429/503 Retry-After) and whose "
                            "wait is not over; without it they are listed as waiting, not called.")

    def handle(self, *args, **opts) -> None:
        pool = opts.get("pool")
        if pool and not Pool.objects.filter(name=pool).exists():
            known = ", ".join(Pool.objects.order_by("name").values_list("name", flat=True)) or "none"
            raise CommandError(f"--pool {pool!r} does not exist; known pools: {known}")
        results = check_all(pool, call_waiting=opts["include_waiting"])
        if not results:
            self.summary("no scanners configured" + (f" in pool {pool}" if pool else ""))
            return
        if self.verbosity >= 1:  # -v 0 (cron): nothing when every scanner is ready; the error line otherwise
            self._table(results)
        not_ready = [f"{s.name} ({r.status})" for s, r in results
                     if r.status != Health.READY and s.enabled and r.waiting_until is None]
        if not_ready:
            raise CommandError(f"not ready: {', '.join(not_ready)}")

    def _table(self, results: list) -> None:
        rows = [("POOL", "SCANNER", "URL", "HEALTH", "VERSION", "LICENCE", "DETAIL")]
        for scanner, report in results:
            licence = report.license.get("name") or report.license.get("type") or ""
            health = "waiting" if report.waiting_until is not None else str(report.status)
            rows.append((scanner.pool.name, scanner.name, scanner.url, health, report.version,
                         str(licence), report.detail))  # the last column: whole, with its hint
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
            style = self.style.SUCCESS if row[3] == Health.READY else self.style.WARNING
            self.stdout.write(style(line) if row is not rows[0] else line)
        ready = sum(1 for _, r in results if r.status == Health.READY and r.waiting_until is None)
        waiting = sum(1 for _, r in results if r.waiting_until is not None)
        self.stdout.write(f"{ready}/{len(results)} scanners ready" + (
            f", {waiting} not checked (asked scanpool to wait; --include-waiting calls them)" if waiting else ""))
