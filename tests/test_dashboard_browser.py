"""The live dashboard in a real headless browser: Debian's chromium driven by Playwright for Python (system
browser, never ``playwright install``) against pytest-django's live server, real Redis for the dead letters.

It renders with data, its numbers match the database, it refreshes by itself, the console stays clean; a
screenshot is saved to ``var/test-artifacts/dashboard.png``. Without chromium the test is skipped, saying how
to get it (``make test`` installs it when run as root)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from scanners.models import BreakerState, Health, Scanner
from tasks.models import ErrorKind, ScanTask, TaskStatus
from tasks.queues import pool_queue
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory, SuperUserFactory

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                       reason="chromium not installed: `make test` installs it as root, or apt-get install chromium"),
]


def populate():
    now = timezone.now()
    pool = PoolFactory(name="wall", scope=["192.0.2.0/24"])
    PoolFactory(name="quiet", scope=["198.51.100.0/24"])
    busy = ScannerFactory(pool=pool, name="wall-1", max_concurrent_scans=2, health=Health.READY)
    ScannerFactory(pool=pool, name="wall-2", max_concurrent_scans=3, health=Health.UNREACHABLE,
                   breaker_state=BreakerState.OPEN)
    Scanner.objects.filter(pk=busy.pk).update(active_scans=1)
    for i in range(3):
        task = ScanTaskFactory(pool=pool, name=f"waiting-{i}")
        ScanTask.objects.filter(pk=task.pk).update(created_at=now - timedelta(seconds=300 - i))
    for hours_ago, status, scan_type, kind in [
        (0, TaskStatus.COMPLETED, "untrusted", ""), (1, TaskStatus.COMPLETED, "untrusted", ""),
        (1, TaskStatus.FAILED, "authenticated", ErrorKind.AUTHENTICATION),
        (1, TaskStatus.COMPLETED, "authenticated", ""),
        (5, TaskStatus.FAILED, "authenticated", ErrorKind.AUTHENTICATION), (30, TaskStatus.COMPLETED, "untrusted", ""),
    ]:
        task = ScanTaskFactory(pool=pool, status=status, scan_type=scan_type)
        ScanTask.objects.filter(pk=task.pk).update(finished_at=now - timedelta(hours=hours_ago, minutes=1),
                                                   error_kind=kind)
    dead = ScanTaskFactory(pool=pool, status=TaskStatus.FAILED)
    job = pool_queue(pool).enqueue_call("tasks.jobs.launch", args=(str(dead.pk),), job_id=str(dead.pk))
    pool_queue(pool).failed_job_registry.add(job, ttl=3600)
    return pool, dead


@pytest.mark.django_db(transaction=True)
def test_dashboard_in_a_real_browser(live_server, settings, redis_conn, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls below are plain blocking calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.SCANPOOL_DASHBOARD_REFRESH = 1
    pool, _ = populate()
    SuperUserFactory(username="wall", password="pw-for-tests-only")
    finished_24h = ScanTask.objects.filter(finished_at__gte=timezone.now() - timedelta(hours=23, minutes=59)).count()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status} {r.url}"))
            page.goto(f"{live_server.url}/ops/dashboard/")
            assert "/admin/login/" in page.url  # staff only: the admin login first
            page.fill("#id_username", "wall")
            page.fill("#id_password", "pw-for-tests-only")
            page.click("input[type=submit]")
            page.wait_for_selector("#ops-live .ops-pool")
            assert page.url.endswith("/ops/dashboard/")

            row = page.locator('.ops-pool[data-pool="wall"]')
            assert row.locator(".ops-active").inner_text() == "1"
            assert row.locator(".ops-capacity").inner_text() == "2"  # wall-2's open breaker: not usable
            assert row.locator(".ops-queued").inner_text() == str(
                ScanTask.objects.filter(pool=pool, status=TaskStatus.QUEUED).count()) == "3"
            assert 295 <= int(row.locator(".ops-oldest").get_attribute("data-seconds")) < 400
            assert row.locator(".ops-dead").inner_text() == "1"
            assert page.locator('.ops-pool[data-pool="quiet"] .ops-queued').inner_text() == "0"
            wall2 = page.locator('.ops-scanner[data-scanner="wall-2"]')
            assert wall2.locator(".ops-load").inner_text() == "0 / 3"
            assert wall2.locator(".ops-breaker").inner_text() == "Open"
            assert "Unreachable" in wall2.inner_text()
            assert page.locator('.ops-scanner[data-scanner="wall-1"] .ops-load').inner_text() == "1 / 2"
            assert page.locator("#ops-scans-24h").inner_text() == str(finished_24h) == "5"
            assert page.locator("#ops-auth-24h").inner_text() == "2"
            bars = page.locator("#chart-scans rect[data-value]")
            assert bars.count() == 24
            assert sum(int(bars.nth(i).get_attribute("data-value")) for i in range(24)) == finished_24h
            assert page.locator("#chart-auth circle[data-value]").count() == 2  # hours with authenticated scans
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # It refreshes by itself: change the database, the page follows without a reload.
            ScanTaskFactory.create_batch(2, pool=pool)
            Scanner.objects.filter(name="wall-1").update(active_scans=2)
            page.wait_for_function(
                """() => document.querySelector('.ops-pool[data-pool="wall"] .ops-queued').textContent.trim() === '5'
                   && document.querySelector('.ops-pool[data-pool="wall"] .ops-active').textContent.trim() === '2'""",
                timeout=15000)
            assert page.locator('.ops-scanner[data-scanner="wall-1"] .ops-load').inner_text() == "2 / 2"
            page.screenshot(path=str(ARTIFACTS / "dashboard-refreshed.png"), full_page=True)
        finally:
            browser.close()
            # The ORM calls above ran inside Playwright's event loop, on a connection of that context: close it,
            # or it stays open past the test (PostgreSQL then cannot drop the test database at the end).
            connection.close()
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_admin_change_lists_fit_1400_px(live_server, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    pool = PoolFactory(name="a-rather-long-pool-name-dmz", scope=["192.0.2.0/24"])
    for i in range(3):
        ScannerFactory(pool=pool, name=f"scanner-in-the-dmz-{i}", url=f"https://scanner-{i}.dmz.example.com:8834",
                       description="rack 4, room 2.17, building B (ops team)")
    for status in TaskStatus.values:
        ScanTaskFactory(pool=pool, status=status, name="weekly credentialed scan of the web farm",
                        targets=["192.0.2.0/24", "192.0.2.250-192.0.2.254"], scan_type="authenticated_privileged")
    SuperUserFactory(username="wide", password="pw-for-tests-only")
    too_wide = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", "wide")
            page.fill("#id_password", "pw-for-tests-only")
            page.click("input[type=submit]")
            page.wait_for_selector("#control-room")
            for path in ("pools/pool/", "scanners/scanner/", "tasks/scantask/", "tasks/finding/", "tasks/resulthost/",
                         ""):
                page.goto(f"{live_server.url}/admin/{path}")
                # The page, and the change list's own scroll box (Django wraps the table in an overflow:auto div).
                width = page.evaluate("""() => Math.max(document.documentElement.scrollWidth,
                    ...[...document.querySelectorAll('#changelist .results')].map(
                        e => e.scrollWidth > e.clientWidth ? 1400 + e.scrollWidth - e.clientWidth : 0))""")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"admin-{path.replace('/', '-') or 'index'}.png"))
                if width > 1400:
                    too_wide[path or "index"] = width
        finally:
            browser.close()
    assert too_wide == {}
