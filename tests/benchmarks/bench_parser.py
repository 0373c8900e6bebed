"""Parser benchmark (``make bench``; not part of ``make test``).

Builds synthetic exports of ~50 MB and ≥ 200 MB from the real fixture hosts (new addresses), then, each
in a fresh child process so that nothing pollutes the numbers, parses them with scanpool's streaming
parser and with reference parsers, and reports throughput (MB/s) and the child's peak RSS
(``VmHWM`` of the child: see the note in ``CHILD``). The streaming parser's peak must stay under 100 MB whatever the
file size. Also measures ingest (parse + database insert) on the 50 MB file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.benchmarks.children import production_env
from tests.benchmarks.synthetic import build

ROOT = Path(__file__).resolve().parents[2]
BIG_BYTES = int(os.environ.get("SCANPOOL_BENCH_BYTES", str(210 * 1000 * 1000)))
SMALL_BYTES = 50 * 1000 * 1000
PEAK_LIMIT_MB = 100

CHILD = r"""
import json, sys, time
mode, path = sys.argv[1], sys.argv[2]

def hwm_kb():
    # Peak RSS of this process image. Not getrusage: after fork+exec, Linux carries the parent's
    # high-water mark into ru_maxrss (here pytest's ~110 MB), VmHWM belongs to the new image only.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")

rss_before = hwm_kb()
hosts = findings = 0
if mode == "scanpool":
    from tasks.results.parser import NessusReader
    started = time.perf_counter()
    names = set()
    for block in NessusReader(path):
        names.add(block.name)
        findings += len(block.findings)
    hosts = len(names)
elif mode == "etree-parse":
    import xml.etree.ElementTree as ET
    started = time.perf_counter()
    root = ET.parse(path).getroot()
    hosts = len(root.findall("Report/ReportHost"))
    findings = len(root.findall("Report/ReportHost/ReportItem"))
elif mode == "etree-iterparse":
    import xml.etree.ElementTree as ET
    started = time.perf_counter()
    for event, el in ET.iterparse(path, events=("end",)):
        if el.tag == "ReportItem":
            findings += 1
            el.clear()
        elif el.tag == "ReportHost":
            hosts += 1
            el.clear()
elif mode == "defusedxml-iterparse":
    from defusedxml.ElementTree import iterparse
    started = time.perf_counter()
    for event, el in iterparse(path, events=("end",)):
        if el.tag == "ReportItem":
            findings += 1
            el.clear()
        elif el.tag == "ReportHost":
            hosts += 1
            el.clear()
elif mode == "lxml-raw":
    from lxml import etree
    started = time.perf_counter()
    for event, el in etree.iterparse(path, events=("end",), tag=("ReportItem", "ReportHost"),
                                     resolve_entities=False, no_network=True, load_dtd=False):
        if el.tag == "ReportItem":
            findings += 1
        else:
            hosts += 1
        el.clear()
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)
elif mode == "lxml-texts":
    # the least any full extraction must do: every ReportItem's attributes and every child's text
    from lxml import etree
    started = time.perf_counter()
    for event, el in etree.iterparse(path, events=("end",), tag=("ReportItem", "ReportHost"),
                                     resolve_entities=False, no_network=True, load_dtd=False):
        if el.tag == "ReportItem":
            findings += 1
            attributes = dict(el.attrib)
            texts = {child.tag: child.text for child in el}
        else:
            hosts += 1
        el.clear()
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)
elif mode == "expat-raw":
    import xml.parsers.expat
    parser = xml.parsers.expat.ParserCreate()
    started = time.perf_counter()
    with open(path, "rb") as fh:
        parser.ParseFile(fh)
else:
    raise SystemExit("unknown mode " + mode)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_kb": hwm_kb(), "start_kb": rss_before,
                  "hosts": hosts, "findings": findings}))
"""

MODES = {
    "scanpool": "scanpool NessusReader (lxml iterparse, hardened, converts every item)",
    "etree-parse": "baseline: xml.etree.ElementTree.parse (whole tree)",
    "etree-iterparse": "reference: stdlib ElementTree.iterparse, counting only",
    "defusedxml-iterparse": "reference: defusedxml's ElementTree.iterparse, counting only",
    "lxml-raw": "reference: lxml iterparse, counting only, no conversion",
    "lxml-texts": "reference: lxml iterparse, attributes and child texts only (no conversion)",
    "expat-raw": "reference: pyexpat without handlers (pure scan)",
}


def run_child(mode: str, path: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True,
                          timeout=1200, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    size = path.stat().st_size
    result["mb_per_s"] = size / 1e6 / result["seconds"]
    result["peak_mb"] = result["peak_kb"] / 1024
    result["size_mb"] = size / 1e6
    return result


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
            f"Python {platform.python_version()}")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bench")
    small, big = directory / "small.nessus", directory / "big.nessus"
    info = {"small": build(small, SMALL_BYTES), "big": build(big, BIG_BYTES)}
    return {"small": (small, info["small"]), "big": (big, info["big"])}


def test_parser_throughput_and_peak_memory(exports):
    big, big_info = exports["big"]
    small, small_info = exports["small"]
    assert big.stat().st_size >= 200 * 1000 * 1000
    rows = []
    for mode in MODES:
        for label, (path, info) in (("50 MB", (small, small_info)), ("big", (big, big_info))):
            if mode not in ("scanpool", "etree-parse") and label == "50 MB":
                continue
            result = run_child(mode, path)
            if mode != "expat-raw":
                assert result["findings"] == info["findings"], (mode, result, info)
            rows.append((mode, label, result))
    print(f"\nMachine: {machine()}")
    print(f"Files: 50 MB = {small_info}, big = {big_info}")
    print(f"{'parser':<21} {'file':>8} {'MB':>7} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12} {'start RSS MB':>13}")
    for mode, label, r in rows:
        print(f"{mode:<21} {label:>8} {r['size_mb']:>7.0f} {r['seconds']:>8.2f} {r['mb_per_s']:>7.1f} "
              f"{r['peak_mb']:>12.1f} {r['start_kb'] / 1024:>13.1f}")
    ours = {label: r for mode, label, r in rows if mode == "scanpool"}
    baseline = next(r for mode, label, r in rows if mode == "etree-parse" and label == "big")
    assert ours["big"]["peak_mb"] < PEAK_LIMIT_MB, ours
    # Flat memory: quadrupling the file barely moves the peak (it depends on the largest host).
    assert ours["big"]["peak_mb"] < ours["50 MB"]["peak_mb"] + 15, ours
    assert baseline["peak_mb"] > 2 * ours["big"]["peak_mb"]
    print(f"scanpool peak {ours['big']['peak_mb']:.1f} MB vs ElementTree.parse {baseline['peak_mb']:.1f} MB; "
          f"throughput {ours['big']['mb_per_s']:.0f} vs {baseline['mb_per_s']:.0f} MB/s")


INGEST_CHILD = r"""
import json, os, sys, time
import django
django.setup()
from django.conf import settings
from tasks.models import Finding
from tasks.results.ingest import ingest_results
from tests.factories import ScanTaskFactory

task = ScanTaskFactory()
started = time.perf_counter()
outcome = ingest_results(task.id, sys.argv[1])
seconds = time.perf_counter() - started
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_kb": peak, "findings": outcome.findings, "hosts": outcome.hosts,
                  "rows": Finding.objects.filter(task=task).count(), "debug": settings.DEBUG}))
"""


def test_ingest_big_file_in_a_child_process(exports, tmp_path):
    """Ingest of the ≥ 200 MB export into a fresh SQLite file, in a child: time and peak memory."""
    path, info = exports["big"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{tmp_path / 'ingest.sqlite3'}",
           "SCANPOOL_RESULTS_DIR": str(tmp_path / "results"), "DJANGO_SETTINGS_MODULE": "scanpool_site.settings",
           **production_env()}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    proc = subprocess.run([sys.executable, "-c", INGEST_CHILD, str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["findings"] == result["rows"] == info["findings"]
    mb = info["bytes"] / 1e6
    assert result["debug"] is False, "the ingest child must run with production settings"
    print(f"\nIngest in a child (sqlite file, DEBUG={result['debug']}): {mb:.0f} MB, {result['hosts']} hosts, "
          f"{result['findings']} findings in {result['seconds']:.1f} s = {mb / result['seconds']:.1f} MB/s, "
          f"{result['findings'] / result['seconds']:.0f} findings/s, peak RSS {result['peak_kb'] / 1024:.0f} MB")
    assert result["peak_kb"] / 1024 < 160  # Django + one batch of rows; does not grow with the file


@pytest.mark.django_db(transaction=True)
def test_ingest_rate(exports):
    from tasks.models import Finding
    from tasks.results.ingest import ingest_results
    from tests.factories import ScanTaskFactory

    path, info = exports["small"]
    task = ScanTaskFactory()
    started = time.perf_counter()
    outcome = ingest_results(task.id, path)
    seconds = time.perf_counter() - started
    assert outcome.findings == info["findings"] == Finding.objects.filter(task=task).count()
    from django.db import connection

    print(f"\nIngest (store + hash + parse + insert, {connection.vendor}): {info['bytes'] / 1e6:.0f} MB, "
          f"{outcome.hosts} hosts, {outcome.findings} findings in {seconds:.1f} s = "
          f"{info['bytes'] / 1e6 / seconds:.1f} MB/s, {outcome.findings / seconds:.0f} findings/s")
