"""Client-policy metrics, computed from the database when ``/metrics`` is scraped:

- ``nessus_policy_refusals_total{client,reason}`` — submissions a client policy refused (one
  :class:`~tasks.models.PolicyRefusal` row each: the count never goes down while the log is kept);
- ``nessus_pending_approval{pool}`` — tasks waiting for approval, per pool (0 for pools with none).

:func:`policy_families` yields the two families (for any collector to include);
:class:`PolicyCollector` is registered with prometheus_client's default registry by
``tasks.apps.TasksConfig.ready`` (no database access there: only at scrape time).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from django.db.models import Count
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pools.models import Pool
from tasks.models import PolicyRefusal, ScanTask, TaskStatus

log = logging.getLogger(__name__)


def policy_families() -> Iterator:
    refusals = CounterMetricFamily("nessus_policy_refusals", "Submissions refused by the client's policy, by "
                                   "client (API token name) and reason.", labels=["client", "reason"])
    for row in PolicyRefusal.objects.order_by().values("client", "reason").annotate(n=Count("pk")) \
            .order_by("client", "reason"):
        refusals.add_metric([row["client"], row["reason"]], row["n"])
    yield refusals
    pending = GaugeMetricFamily("nessus_pending_approval", "Tasks held for approval by their client's policy "
                                "(not queued, no slot).", labels=["pool"])
    counts = dict(ScanTask.objects.filter(status=TaskStatus.PENDING_APPROVAL).order_by().values("pool_id")
                  .annotate(n=Count("pk")).values_list("pool_id", "n"))
    for pool_id, name in Pool.objects.order_by("name").values_list("pk", "name"):
        pending.add_metric([name], counts.get(pool_id, 0))
    yield pending


class PolicyCollector(Collector):
    def collect(self) -> Iterator:
        try:
            yield from list(policy_families())
        except Exception:  # a scrape must never take /metrics down with it
            log.exception("client-policy metrics collection failed")

    def describe(self) -> list:
        return []  # computed at scrape time


_registered = False
_lock = threading.Lock()


def register() -> None:
    """Register :class:`PolicyCollector` with the default registry, once per process."""
    global _registered
    with _lock:
        if not _registered:
            REGISTRY.register(PolicyCollector())
            _registered = True
