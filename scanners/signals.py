"""Signals the scanners app sends so that higher apps can act without being imported (DESIGN §8).

``breaker_changed``: a scanner's circuit breaker changed state (opened, half-open for a trial, closed,
reset by hand). Keyword arguments: ``change`` (:class:`scanners.breaker.BreakerChange`) and ``task_id`` (the
task whose call caused it, or None). The engine (``tasks.engine.events``) records the task event and
schedules the pool's dispatch.

``connection_confirmed``: a scanner's connection was confirmed for authenticated scans. Keyword arguments:
``scanner_id``, ``pool_id``. The engine dispatches the pool (authenticated tasks may have been waiting for it).

``scanner_changed``: an operator changed a scanner (created it, enabled it, raised its ``max_concurrent_scans``,
moved it to a pool, …) or a health check found it selectable again: it may take work it could not take before.
Keyword arguments: ``scanner_id``, ``pool_id``. The engine dispatches the pool at once (waiting tasks must not wait
for the next slot release or periodic reconcile while a slot is free).
"""

from __future__ import annotations

from django.dispatch import Signal

breaker_changed = Signal()
connection_confirmed = Signal()
scanner_changed = Signal()
