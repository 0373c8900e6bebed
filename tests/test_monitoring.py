"""docs/monitoring/: the alert rules and the Grafana dashboard name only metrics /metrics really exports.

``promtool check rules`` runs too when promtool is installed (Debian's ``prometheus`` package); otherwise the
structure test below is the check (PromQL syntax is then not verified)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tasks.cleanup import cleanup_tasks
from tasks.engine.transitions import transition
from tasks.models import TaskStatus
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory
from tests.ops_support import METRICS_TOKEN

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "monitoring" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
METRIC = re.compile(r"\bnessus_[a-z_]+\b")
EXPECTED_ALERTS = {"ScanpoolPoolSaturated", "ScanpoolCircuitBreakerOpen", "ScanpoolScannerDown",
                   "ScanpoolAuthFailuresRising", "ScanpoolDeadLettersGrowing", "ScanpoolOldestQueuedTooOld"}


@pytest.fixture
def exported(client, settings, redis_conn) -> set[str]:
    """Every sample name /metrics exports once one scan has ended (counters and the histogram included)."""
    pool = PoolFactory(name="mon", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool)
    task = ScanTaskFactory(pool=pool, status=TaskStatus.RUNNING, started_at=timezone.now())
    transition(task.pk, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED)
    bad = ScanTaskFactory(pool=pool, status=TaskStatus.RUNNING, started_at=timezone.now(), scan_type="authenticated")
    transition(bad.pk, expect=TaskStatus.RUNNING, to=TaskStatus.FAILED, fields={"error_kind": "authentication"})
    cleanup_tasks(older_than=timedelta(0))  # exports nessus_ttl_deletions_total
    settings.SCANPOOL_METRICS_TOKEN = METRICS_TOKEN
    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


@pytest.mark.django_db
def test_alert_rules_are_well_formed_and_name_existing_metrics(exported):
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        names = set(METRIC.findall(rule["expr"]))
        assert names and names <= exported, (rule["alert"], names - exported)
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


@pytest.mark.django_db
def test_grafana_dashboard_queries_name_existing_metrics(exported):
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names and names <= exported, (expr, names - exported)
    families = {re.sub(r"_(bucket|sum|count|total)$", "", n) for e in exprs for n in METRIC.findall(e)}
    assert {"nessus_scanner_utilization_pct", "nessus_pool_queue_depth", "nessus_scan_duration_seconds",
            "nessus_auth_failures"} <= families


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (Debian: apt-get install prometheus)")
def test_promtool_checks_the_rules():
    proc = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metrics_doc_lists_every_metric():
    text = (ROOT / "docs" / "metrics.md").read_text()
    for name in ("nessus_scanner_active_scans", "nessus_scanner_capacity", "nessus_scanner_utilization_pct",
                 "nessus_scanner_up", "nessus_scanner_circuit_breaker_open", "nessus_pool_queue_depth",
                 "nessus_pool_dlq_depth", "nessus_pool_oldest_queued_seconds", "nessus_scans_total",
                 "nessus_auth_failures_total", "nessus_validation_failures_total", "nessus_ttl_deletions_total",
                 "nessus_scan_duration_seconds"):
        assert f"`{name}" in text, name
