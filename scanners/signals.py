"""Signals the scanners app sends so that higher apps can act without being imported (DESIGN §8).

``breaker_changed``: a scanner's circuit breaker changed state (opened, half-open for a trial, closed,
reset by hand). Keyword arguments: ``change`` (:class:`scanners.breaker.BreakerChange`) and ``task_id`` (the
task whose call caused it, or None). The engine (``tasks.engine.events``) records the task event and
schedules the pool's dispatch.

``connection_confirmed``: a scanner's connection was confirmed for authenticated scans. Keyword arguments:
``scanner_id``, ``pool_id``. The engine dispatches the pool (authenticated tasks may have been waiting for it).
"""

from __future__ import annotations

from django.dispatch import Signal

breaker_changed = Signal()
connection_confirmed = Signal()
