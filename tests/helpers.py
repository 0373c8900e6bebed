"""The one module of small helpers every test may import: waiting on a condition instead of sleeping.

    from tests.helpers import wait_for

    task = wait_for(lambda: ScanTask.objects.filter(status="running").first(), timeout=20, what="a running task")

``wait_for`` polls ``predicate`` until it returns something truthy and returns that, or fails the test after
``timeout`` seconds naming ``what`` (plus the last lines of each of ``logs``: worker processes, emulators —
anything with a ``log()`` method). A fixed ``time.sleep`` either wastes time on a fast machine or flakes on a
loaded one; a wait on the condition does neither. Keep a plain sleep only where the test asserts that
something does *not* happen within a time (and say so next to it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "the condition",
             logs: Iterable[Any] = (), interval: float = 0.05) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns a truthy value (returned) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(str(source.log())[-getattr(source, "tail", 3000):] for source in logs)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{tails}" if tails else ""))
        time.sleep(pause)
        pause = min(pause * 1.5, max(interval, 0.25))  # quick for what is quick, gentle on a loaded machine
