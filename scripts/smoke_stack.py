"""`make smoke`'s building blocks (scripts/smoke_driver.py uses them): the check report, waiting on conditions,
TCP probes (optionally from inside a network namespace), the supervised processes, secret files, the scanners
file, an emulator's scans seen through its control API."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
WORK = Path(os.environ["SMOKE_WORK"])
HOST = "scanpool.smoke.test"  # the Host the site answers to (DJANGO_ALLOWED_HOSTS)
SCOPE = "192.0.2.0/24"

results: list[tuple[str, str, str]] = []


def report(status: str, name: str, detail: str = "") -> None:
    results.append((status, name, detail))
    print(f"{'!!' if status in {'FAIL', 'SKIPPED'} else '>>'} {status:8} {name}"
          + (f": {detail}" if detail else ""), flush=True)


def check(name: str, ok: bool, detail: str = "") -> bool:
    report("PASS" if ok else "FAIL", name, "" if ok else detail)
    return ok


def free_port(count: int = 1) -> int:
    """A port of 127.0.0.1 free now, and the `count - 1` ports after it too (an emulator listens on one port per
    instance). Free when chosen, not reserved: whoever binds it must still check it got it."""
    while True:
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                for extra in range(1, count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port + extra))
            except OSError:
                continue
            return port


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval)
    print(f"   (gave up waiting for {what} after {timeout:.0f} s)", flush=True)
    return False


def can_connect(host: str, port: int, netns: str | None = None, timeout: float = 2.0) -> bool:
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout={timeout}).close()"
    cmd = [sys.executable, "-c", code]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, timeout=timeout + 10, check=False).returncode == 0


class Stack:
    """The processes of the smoke test; all stopped (TERM, then KILL) at exit."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.supervised: set[str] = set()
        self.restarts: dict[str, int] = {}
        self.stopping = False
        self.lock = threading.Lock()
        threading.Thread(target=self._supervise, daemon=True).start()

    def start(self, name: str, cmd: list[str], env: dict[str, str], *, netns: str | None = None,
              supervise: bool = False) -> subprocess.Popen:
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        with self.lock:
            self.specs[name] = (cmd, env)
            if supervise:
                self.supervised.add(name)
            return self._spawn(name)

    def _spawn(self, name: str) -> subprocess.Popen:
        cmd, env = self.specs[name]
        log = open(WORK / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def _supervise(self) -> None:
        """restart: unless-stopped, as Compose does: a supervised process that exits is started again."""
        while True:
            time.sleep(2)
            with self.lock:
                if self.stopping:
                    return
                for name in list(self.supervised):
                    if self.procs[name].poll() is not None:
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                        self._spawn(name)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def log(self, name: str) -> str:
        path = WORK / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, *, forget_log: bool = False) -> None:
        with self.lock:
            self.supervised.discard(name)
            proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a worker's scheduler child
        if forget_log:
            (WORK / f"{name}.log").unlink(missing_ok=True)

    def stop_all(self) -> None:
        with self.lock:
            self.stopping = True
        # Workers and web first, Redis last (workers release their locks on the way out).
        for name in sorted(self.procs, key=lambda n: n == "redis"):
            self.stop(name)


def write_secret(name: str, value: str) -> str:
    path = WORK / "secrets" / name
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def scanners_yaml(pools: list[tuple[str, list[str]]]) -> str:
    """The smoke's scanners file: each pool scoped to SCOPE only (an empty scope allows nothing; the scanners'
    own addresses are refused), its emulators over https (self-signed: verify_tls false; plain http would need
    allow_plain_http), the scanner login from ${VAR}s so no password is written to the file."""
    lines = ["pools:"]
    for pool, urls in pools:
        lines += [f"  - name: {pool}", f'    scope: ["{SCOPE}"]', "    poll_interval: 5s", "    scanners:"]
        for i, url in enumerate(urls):
            lines += [f"      - name: {pool}-s{i}", "        kind: nessus", f"        url: {url}",
                      "        username: ${SMOKE_SCANNER_USER}", "        password: ${SMOKE_SCANNER_PASSWORD}",
                      "        verify_tls: false", "        max_concurrent_scans: 2"]
    return "\n".join(lines) + "\n"


def fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def emulator_scans(netns: str, host: str, port: int) -> dict[str, dict]:
    """The scans an emulator holds (its control API, GET /_emulator/state), asked from inside its namespace,
    by task id (a scanpool scan's name ends with ``[scanpool:<task id>]``)."""
    code = ("import json, ssl, sys, urllib.request\n"
            f"url = 'https://{host}:{port}/_emulator/state'\n"
            "ctx = ssl._create_unverified_context()\n"
            "sys.stdout.write(urllib.request.urlopen(url, context=ctx, timeout=10).read().decode())\n")
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    scans = json.loads(out)["scans"]
    return {m.group(1): scan for scan in scans if (m := re.search(r"\[scanpool:([0-9a-f-]{36})\]\s*\Z", scan["name"]))}
