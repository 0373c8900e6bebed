"""Ops commands silence logging below -v 2 with ``logging.disable``, which is process-wide. Two run at once in
threads (as a test or a thread pool calling ``call_command`` does) must leave logging as they found it: the one that
ended last used to restore the other's quiet level, and every log record up to ERROR of the process was dropped
from then on."""

from __future__ import annotations

import logging
import threading

from django.core.management import call_command

from scanpool_site.ops_command import QUIET_LOG_LEVEL, OpsCommand


class Overlapping(OpsCommand):
    """Runs until told to end, so the test chooses the order in which two runs start and end."""

    def __init__(self, started: threading.Event, end: threading.Event) -> None:
        super().__init__()
        self.started, self.end = started, end

    def handle(self, *args, **options) -> None:
        self.started.set()
        assert self.end.wait(10)


def test_two_ops_commands_in_threads_leave_logging_as_they_found_it():
    assert logging.root.manager.disable == logging.NOTSET
    a_started, a_end, b_started, b_end = (threading.Event() for _ in range(4))
    a = threading.Thread(target=call_command, args=(Overlapping(a_started, a_end),), kwargs={"verbosity": 1})
    b = threading.Thread(target=call_command, args=(Overlapping(b_started, b_end),), kwargs={"verbosity": 0})
    a.start()
    assert a_started.wait(10)
    b.start()
    assert b_started.wait(10)
    assert logging.root.manager.disable == QUIET_LOG_LEVEL  # both quiet
    a_end.set()  # the first one ends first ...
    a.join(10)
    assert logging.root.manager.disable == QUIET_LOG_LEVEL  # ... while the other still runs quietly
    b_end.set()
    b.join(10)
    assert logging.root.manager.disable == logging.NOTSET
