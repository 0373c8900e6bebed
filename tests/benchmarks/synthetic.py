"""Build large synthetic ``.nessus`` exports by repeating the real hosts of the fixture corpus.

Every ReportHost of ``tests/fixtures/nessus/`` is cut out byte for byte; the copies get new
addresses (``10.x.y.z``) in the ``name`` attribute and the ``host-ip`` property, so a file of any size
is made of real Nessus content with distinct hosts.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nessus"
_HOST_RE = re.compile(rb"<ReportHost\b.*?</ReportHost>", re.S)
_NAME_RE = re.compile(rb'<ReportHost\s+name="[^"]*"')
_IP_RE = re.compile(rb'(<tag name="host-ip">)[^<]*(</tag>)')


def fixture_dir() -> Path:
    import os

    return Path(os.environ.get("SCANPOOL_NESSUS_FIXTURES", str(FIXTURES)))


def real_hosts(directory: Path | None = None) -> list[bytes]:
    hosts: list[bytes] = []
    for path in sorted((directory or fixture_dir()).glob("*.nessus")):
        hosts.extend(m.group(0) for m in _HOST_RE.finditer(path.read_bytes()))
    return hosts


def policy_header(directory: Path | None = None) -> bytes:
    """Prolog and Policy of the mixed-auth fixture, up to (not including) its <Report>."""
    data = ((directory or fixture_dir()) / "mitre-saf-home-network-3hosts-mixed-auth.nessus").read_bytes()
    return data[: data.index(b"<Report ")]


def build(path: Path, target_bytes: int, *, directory: Path | None = None) -> dict[str, int]:
    """Write a synthetic export of at least ``target_bytes``; return its host and finding counts."""
    hosts = real_hosts(directory)
    items_per_host = [h.count(b"<ReportItem ") for h in hosts]
    base = int(ipaddress.IPv4Address("10.0.0.1"))
    written = hosts_written = findings = 0
    with path.open("wb") as out:
        header = policy_header(directory) + b'<Report name="synthetic" xmlns:cm="http://www.nessus.org/cm">\n'
        out.write(header)
        written += len(header)
        while written < target_bytes:
            index = hosts_written % len(hosts)
            address = str(ipaddress.IPv4Address(base + hosts_written)).encode()
            block = _NAME_RE.sub(b'<ReportHost name="' + address + b'"', hosts[index], count=1)
            block = _IP_RE.sub(rb"\g<1>" + address + rb"\g<2>", block, count=1)
            out.write(block)
            out.write(b"\n")
            written += len(block) + 1
            hosts_written += 1
            findings += items_per_host[index]
        footer = b"</Report>\n</NessusClientData_v2>\n"
        out.write(footer)
        written += len(footer)
    return {"bytes": written, "hosts": hosts_written, "findings": findings}
