"""Helpers for the operations tests: the workers fixture, waiting, scraping /metrics like Prometheus does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.utils import utcformat

from tests.helpers import wait_for  # noqa: F401 - re-exported for the ops tests
from tests.worker_process import workers  # noqa: F401 - the shared fixture, re-exported for the ops tests

METRICS_TOKEN = "ops-tests-metrics-token"


def scrape(client, settings) -> dict[tuple[str, tuple], float]:
    """GET /metrics as a loopback Prometheus with the bearer token; {(sample name, sorted labels): value}."""
    settings.SCANPOOL_METRICS_TOKEN = METRICS_TOKEN
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content[:500]
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def series(samples: dict, name: str) -> dict[tuple, float]:
    """The samples of one metric name, keyed by their sorted label items."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def register_worker_elsewhere(conn, name: str, queue_name: str, heartbeat_age: float) -> None:
    """A worker on another host (no pid to check) registered the way RQ registers one, last seen
    ``heartbeat_age`` seconds ago."""
    worker = Worker([Queue(queue_name, connection=conn)], name=name, connection=conn)
    worker.hostname, worker.pid = "another-host", 4242
    worker.register_birth()
    conn.hset(worker.key, "last_heartbeat", utcformat(datetime.now(UTC) - timedelta(seconds=heartbeat_age)))
