"""Dispatch benchmark (``make bench``): two ``scanworker`` processes follow ≥ 200 concurrent emulated scans.

Set-up: the emulator with 4 instances (``--scan-seconds`` from ``SCANPOOL_BENCH_SCAN_SECONDS``, default
30) behind one pool of 4 scanners with 64 slots each (256; more for a bigger run, so every scan can run at
once), poll interval 5 s; tasks are submitted at a steady rate (``SCANPOOL_BENCH_RATE`` per second,
default 20) until the run's size is in, so the pool always has free capacity when a task arrives and the
scans overlap. One run per size in ``SCANPOOL_BENCH_TASKS`` (default ``100,240,400``).

Measured: dispatch latency submit → launched on the scanner (``started_at - created_at``, p50/p95/max),
the peak number of scans running at once (sampled from the database every 0.5 s), completed scans per
minute (completed tasks over the time from the first launch to the last finish), and the workers'
resident memory (VmRSS of each worker process and its scheduler child, sampled; the peak is shown).
Asserted: every scan completes, each is launched once, no instance ever exceeds its slot limit, at
least 200 scans (90 % of a smaller run) run at the same time; with 240 or more scans p95 submit→launch
< 1 s; from 100 to 400 scans p95 grows at most 1.5 times.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from scanners.models import Scanner
from tasks.models import ScanTask
from tasks.services import submit
from tests.benchmarks.children import production_env
from tests.emulator import EmulatorProcess
from tests.factories import PoolFactory, ScannerFactory
from tests.worker_process import WorkerProcess

SIZES = [int(n) for n in os.environ.get("SCANPOOL_BENCH_TASKS", "100,240,400").split(",") if n.strip()]
RATE = float(os.environ.get("SCANPOOL_BENCH_RATE", "20"))
SCAN_SECONDS = float(os.environ.get("SCANPOOL_BENCH_SCAN_SECONDS", "30"))
INSTANCES, POLL = 4, 5
P95: dict[int, float] = {}  # tasks → p95 submit→launch of this run, for the scaling check


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _family(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return [pid, *kids]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _slots(tasks: int) -> int:
    """Slots per scanner: 64, or more so that every scan of a bigger run can run at once."""
    return max(64, -(-tasks // INSTANCES) + 8)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tasks", SIZES)
def test_two_workers_follow_concurrent_scans(redis_conn, tasks):
    TASKS, SLOTS = tasks, _slots(tasks)
    emu = EmulatorProcess(instances=INSTANCES, scan_seconds=SCAN_SECONDS).start()
    workers: list[WorkerProcess] = []
    try:
        pool = PoolFactory(name="bench", poll_interval_seconds=POLL, scan_timeout_seconds=3600)
        for i in range(INSTANCES):
            ScannerFactory(pool=pool, name=f"bench-{i}", url=emu.urls[i], username=emu.username,
                           password=emu.password, verify_tls=False, max_concurrent_scans=SLOTS)
        for _ in range(2):
            workers.append(WorkerProcess(["bench"], SCANPOOL_LOG_LEVEL="WARNING", **production_env()))
            workers[-1].start()
        rss_peak: dict[int, int] = {}
        peak_running = 0

        def sample() -> None:
            nonlocal peak_running
            peak_running = max(peak_running, ScanTask.objects.filter(status="running").count())
            for w in workers:
                rss_peak[w.proc.pid] = max(rss_peak.get(w.proc.pid, 0),
                                           sum(_rss_kib(p) for p in _family(w.proc.pid)))

        began = time.monotonic()
        last_sample = 0.0
        for i in range(TASKS):
            target = began + i / RATE
            while (remaining := target - time.monotonic()) > 0:  # read the clock once: never a negative sleep
                time.sleep(min(0.01, remaining))
            submit(pool="bench", name=f"bench-{i:04d}", targets=["192.0.2.10"])
            if time.monotonic() - last_sample > 0.5:
                sample()
                last_sample = time.monotonic()
        deadline = time.monotonic() + SCAN_SECONDS * 3 + 120
        while ScanTask.objects.filter(status__in=["queued", "running"]).exists():
            assert time.monotonic() < deadline, "the scans did not finish: " + workers[0].log()[-3000:]
            sample()
            time.sleep(0.5)
        sample()

        rows = list(ScanTask.objects.filter(pool=pool).values("status", "created_at", "claimed_at", "started_at",
                                                              "finished_at"))
        assert {r["status"] for r in rows} == {"completed"}
        latency = [(r["started_at"] - r["created_at"]).total_seconds() for r in rows]
        to_claim = [(r["claimed_at"] - r["created_at"]).total_seconds() for r in rows]
        to_launch = [(r["started_at"] - r["claimed_at"]).total_seconds() for r in rows]
        first = min(r["started_at"] for r in rows)
        last = max(r["finished_at"] for r in rows)
        per_minute = len(rows) / ((last - first).total_seconds() / 60)
        stats = [emu.control(i).stats() for i in range(INSTANCES)]
        scans = [s for i in range(INSTANCES) for s in emu.control(i).scans()]
        assert len(scans) == TASKS and all(s["launches"] == 1 for s in scans)
        assert all(s["max_concurrent"] <= SLOTS for s in stats), stats
        assert all(s.active_scans == 0 for s in Scanner.objects.filter(pool=pool))

        print()
        print(f"dispatch benchmark: {TASKS} tasks at {RATE:g}/s, scans {SCAN_SECONDS:g}s, "
              f"{INSTANCES} scanners x {SLOTS} slots, poll {POLL}s, 2 workers")
        print("| metric | value |")
        print("| --- | ---: |")
        print(f"| dispatch latency p50 (submit → launched) | {statistics.median(latency):.3f} s |")
        print(f"| dispatch latency p95 | {_pct(latency, 0.95):.3f} s |")
        print(f"| dispatch latency max | {max(latency):.3f} s |")
        print(f"| of which submit → claimed, p50 / p95 | {statistics.median(to_claim):.3f} / "
              f"{_pct(to_claim, 0.95):.3f} s |")
        print(f"| of which claimed → launched, p50 / p95 | {statistics.median(to_launch):.3f} / "
              f"{_pct(to_launch, 0.95):.3f} s |")
        print(f"| peak scans running at once | {peak_running} |")
        per_instance = ", ".join(str(s["max_concurrent"]) for s in stats)
        print(f"| per-instance max concurrency (limit {SLOTS}) | {per_instance} |")
        print(f"| completed scans per minute | {per_minute:.0f} |")
        for n, (_pid, kib) in enumerate(sorted(rss_peak.items()), 1):
            print(f"| worker {n} peak RSS (worker + scheduler) | {kib / 1024:.0f} MiB |")
        P95[TASKS] = _pct(latency, 0.95)
        assert peak_running >= min(200, int(0.9 * TASKS)), f"only {peak_running} scans ran at once"
        if TASKS >= 240:
            assert P95[TASKS] < 1.0, f"p95 submit→launch {P95[TASKS]:.3f} s with {TASKS} scans (goal < 1 s)"

    finally:
        for w in workers:
            w.cleanup()
        emu.stop()


def test_p95_grows_at_most_1_5x_from_100_to_400_scans():
    """Run after the sizes above (same module, in order): launches do not slow down with the running scans."""
    if not {100, 400} <= P95.keys():
        pytest.skip("needs the 100- and 400-scan runs (SCANPOOL_BENCH_TASKS)")
    ratio = P95[400] / max(P95[100], 0.05)  # below 50 ms the ratio of two tiny numbers says nothing
    print(f"\np95 submit→launch: 100 scans {P95[100]:.3f} s, 400 scans {P95[400]:.3f} s: x{ratio:.2f}")
    assert ratio <= 1.5, f"p95 grew x{ratio:.2f} from 100 to 400 running scans (goal ≤ 1.5)"
