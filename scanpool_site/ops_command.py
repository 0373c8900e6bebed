"""The operations commands cron runs (``reconcile``, ``cleanup_tasks``, ``dlq``, ``check_scanners``) print their
report once, and nothing when there is nothing to say.

Verbosity (Django's ``-v``), the same for each of them:

* ``-v 0`` — only what the run did or found (a slot released, a task deleted, a dead letter listed); a run that
  did nothing prints nothing. Errors still go to stderr, and the exit status is 1 (``CommandError``).
* ``-v 1`` (default) — the same plus at most one summary line (the only line of a run that did nothing), and notes
  on what is in order but worth a line (``reconcile``: a scanner not called because it asked scanpool to wait).
* ``-v 2`` and more — every line of the report, zero counts included, and the log records of the work done
  (``SCANPOOL_LOG_LEVEL``, tracebacks of errors included).

Below ``-v 2`` the log records of the work are not printed: they said again, on stderr, what the report prints
(a health change, an orphan scan, the report itself), and cron mailed both. Every error they could carry is in the
report, which the command prints on stderr.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand

QUIET_LOG_LEVEL = logging.ERROR  # below -v 2, records at this level and under are dropped (CRITICAL still shows)

# logging.disable() is process-wide: commands run at once in threads (call_command from a thread pool) share one
# quiet period, so whichever ends last gives back the level found by the first, never another's quiet level.
_quiet_lock = threading.Lock()
_quiet = {"depth": 0, "before": logging.NOTSET}


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Drop log records up to :data:`QUIET_LOG_LEVEL` while the block runs (nested and threaded use included)."""
    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet["before"] = logging.root.manager.disable
            logging.disable(max(_quiet["before"], QUIET_LOG_LEVEL))
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                logging.disable(_quiet["before"])


class OpsCommand(BaseCommand):
    """A command whose output is its report (see the module docstring)."""

    verbosity = 1

    def execute(self, *args: Any, **options: Any) -> Any:
        self.verbosity = int(options.get("verbosity", 1))
        if self.verbosity >= 2:
            return super().execute(*args, **options)
        with quiet_logging():
            return super().execute(*args, **options)

    def done(self, lines: list[str]) -> None:
        """What the run did or found: printed at every verbosity."""
        for line in lines:
            self.stdout.write(line)

    def summary(self, line: str) -> None:
        """The one summary line: from ``-v 1``."""
        if self.verbosity >= 1:
            self.stdout.write(line)

    def notes(self, lines: list[str]) -> None:
        """What is in order but worth saying (a scanner left alone because it asked to wait): from ``-v 1``."""
        if self.verbosity >= 1:
            for line in lines:
                self.stdout.write(line)

    def detail(self, lines: list[str]) -> None:
        """Zero counts and other detail: from ``-v 2``."""
        if self.verbosity >= 2:
            for line in lines:
                self.stdout.write(line)

    def errors(self, lines: list[str]) -> None:
        """Errors: on stderr, at every verbosity (the command then raises ``CommandError``: exit status 1)."""
        for line in lines:
            self.stderr.write(line)
