"""Prometheus counters kept in the database, so they add up across every worker and never go down
(not after a restart, not after ``cleanup_tasks`` deletes the tasks they counted).

One row per (metric, label set). Rows are only ever incremented, inside the same transaction as the
change they count (a terminal transition, a TTL deletion): a rolled-back change counts nothing.
Histogram buckets are rows too (``<name>_bucket`` with an ``le`` label, ``_sum`` and ``_count``).
"""

from __future__ import annotations

from django.db import models


class MetricTotal(models.Model):
    metric = models.CharField(max_length=100)
    # Canonical label set: JSON object with sorted keys (see tasks.observability.totals.label_key).
    labels = models.CharField(max_length=500, default="{}")
    value = models.FloatField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "metric total"
        # The operations pages' own permission (the queues page shows every job and worker): superusers have it.
        permissions = [("view_queues", "Can view RQ queues, workers and failed jobs (/ops/queues/)")]
        constraints = [models.UniqueConstraint(fields=["metric", "labels"], name="metrictotal_metric_labels_unique")]

    def __str__(self) -> str:
        return f"{self.metric}{self.labels} = {self.value:g}"
