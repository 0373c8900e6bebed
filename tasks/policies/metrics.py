"""Client-policy metrics, computed from the database when ``/metrics`` is scraped:

- ``nessus_policy_refusals_total{client,reason}`` — submissions a client policy refused (one
  :class:`~tasks.models.PolicyRefusal` row each: the count never goes down while the log is kept);
- ``nessus_pending_approval{pool}`` — tasks waiting for approval, per pool (0 for pools with none).

:func:`policy_families` yields the two families; the scanpool collector
(``tasks.observability.metrics.ScanpoolCollector``) includes them in every scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pools.models import Pool
from tasks.models import PolicyRefusal, ScanTask, TaskStatus


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
