"""Run the Nessus emulator (``manage.py nessus_emulator``) for tests: in-process or as a real subprocess.

``EmulatorThread`` serves the emulator's instances from threads of the test process on real loopback sockets
(the command's own argument parser reads ``extra_args``): no interpreter and Django start-up, so it is what
the fixtures give by default. ``EmulatorProcess`` runs the command as a subprocess, for what needs one: its
printed output (``log()``), a process to kill, and the command line's exit codes.

API (both classes)::

    from tests.emulator import EmulatorProcess, EmulatorThread

    with EmulatorThread(instances=2, scan_seconds=2) as emu:      # or use the fixtures below
        emu.urls            # ["http://127.0.0.1:P", "http://127.0.0.1:P+1"]
        emu.port            # P (instance i listens on P + i)
        emu.username, emu.password, emu.access_key, emu.secret_key
        c = emu.control(0)  # control API of instance 0 (no Nessus auth)
        c.state()           # {"faults": …, "stats": {"current_running", "max_concurrent",
                            #   "launches": {scan id: n}}, "scans": […]}
        c.stats()           # state()["stats"]; stats()["recent"]: the last 200 API requests as
                            #   [unix time, method, path, status], oldest first (pacing checks)
        c.scans()           # state()["scans"]: [{id, name, status, progress, launches, scenario, targets}]
        c.launches_for(name_part)  # total launches of the scans whose name contains name_part
        c.set_faults(latency=0.2, error_burst=3, session_expiry=2, unlicensed=True, pending_stall=5,
                     hang_at_99=True, export_error=True, not_ready=True, token_flow=False)
        c.set_faults(error_match="^POST /scans/[0-9]+/launch$", error_burst=1, error_status=429, retry_after="2")
                            # only the next launch is answered 429 with "Retry-After: 2"
        c.down(seconds=0)   # close instance 0's socket (connection refused); seconds>0: back by itself
        c.up()              # reopen it (sent through another live instance: with 1 instance use down(seconds))
        c.reset()           # forget scans/sessions/stats, restore start-up faults
        emu.log()           # EmulatorProcess only: what the process printed (URLs, login, keys, errors)
        emu.stop()          # SIGTERM and wait (thread: close the sockets); emu.kill(): SIGKILL;
        emu.restart()       # same ports, fresh state

Fixtures (registered for every test by ``pytest_plugins = ["tests.emulator"]`` in tests/conftest.py; just
name them as test arguments, do not import them):

* ``emulator`` — one in-process emulator for the session, 2 instances, ``--scan-seconds 1``, plain HTTP;
  every test starts with all instances up and reset, so faults and scans do not leak between tests.
* ``emulator_factory`` — function scope; ``emulator_factory(instances=3, scan_seconds=1, extra_args=[…],
  https=False, process=False)`` starts one more emulator (``process=True``: a subprocess), stopped at the end
  of the test.

The process runs ``<this python> manage.py nessus_emulator --http --port P --instances N --scan-seconds S
[extra_args]`` (``https=True`` drops ``--http``) with ``P`` the first of N consecutive free ports, and is
ready when every instance answers its control API (or, with ``--down``, when it printed ``ready``).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ACCESS_KEY = "aaaaaaaa0e1a7e5ca2e5e55e7a5ca21e" + "0" * 32
DEFAULT_SECRET_KEY = "55555555ec7e7a5ca2e5e55e7a5ca21e" + "1" * 32


def free_port_block(count: int, start: int = 20000, end: int = 60000) -> int:
    """The first port of ``count`` consecutive free loopback ports (random start, so parallel runs differ)."""
    import random

    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        first = rng.randrange(start, end - count)
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no block of {count} free ports found")


class EmulatorControl:
    """The control API (``/_emulator/…``) of one instance."""

    def __init__(self, emu: EmulatorProcess, index: int) -> None:
        self.emu = emu
        self.index = index

    def _call(self, method: str, action: str, body: dict | None = None, query: str = "") -> dict[str, Any]:
        errors = []
        # Address the instance directly, or through any live sibling when it is down.
        order = [self.index] + [i for i in range(self.emu.instances) if i != self.index]
        for via in order:
            path = f"/_emulator/{action}" if via == self.index else f"/_emulator/instances/{self.index}/{action}"
            try:
                return self.emu.request(via, method, path + query, body)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    raise
                errors.append(exc)
        raise ConnectionError(f"no emulator instance answered the control API: {errors}")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "state")

    def stats(self) -> dict[str, Any]:
        return self.state()["stats"]

    def scans(self) -> list[dict[str, Any]]:
        return self.state()["scans"]

    def launches_for(self, name_part: str) -> int:
        return sum(s["launches"] for s in self.scans() if name_part in s["name"])

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        return self._call("POST", "faults", knobs)["faults"]

    def down(self, seconds: float = 0.0) -> None:
        self._call("POST", "faults", {"down": True, "down_seconds": seconds})

    def up(self) -> None:
        self._call("POST", "faults", {"down": False, "down_seconds": 0})

    def reset(self, keep_faults: bool = False) -> dict[str, Any]:
        return self._call("POST", "reset", {}, "?keep_faults=1" if keep_faults else "")


class EmulatorProcess:
    def __init__(self, instances: int = 1, scan_seconds: float = 2.0, extra_args: list[str] | None = None,
                 https: bool = False, port: int | None = None) -> None:
        self.instances = instances
        self.scan_seconds = scan_seconds
        self.extra_args = list(extra_args or [])
        self.https = https
        self.port = port or free_port_block(instances)
        self.username = "admin"
        self.password = "admin"
        self.access_key = DEFAULT_ACCESS_KEY
        self.secret_key = DEFAULT_SECRET_KEY
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def urls(self) -> list[str]:
        scheme = "https" if self.https else "http"
        return [f"{scheme}://127.0.0.1:{self.port + i}" for i in range(self.instances)]

    def control(self, index: int = 0) -> EmulatorControl:
        return EmulatorControl(self, index)

    def request(self, index: int, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> Any:
        import ssl

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.urls[index] + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        context = ssl._create_unverified_context() if self.https else None
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 20.0) -> EmulatorProcess:
        cmd = [sys.executable, str(ROOT / "manage.py"), "nessus_emulator", "--port", str(self.port),
               "--instances", str(self.instances), "--scan-seconds", str(self.scan_seconds), *self.extra_args]
        if not self.https:
            cmd.append("--http")
        import tempfile

        log = tempfile.NamedTemporaryFile(prefix="nessus-emulator-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        log.close()
        deadline = time.monotonic() + timeout
        down_at_start = "--down" in self.extra_args
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.proc.returncode}:\n{self.log()}")
            if down_at_start and "ready" in self.log():
                return self
            try:
                for i in range(self.instances):
                    self.request(i, "GET", "/_emulator/state", timeout=1.0)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"emulator not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> EmulatorProcess:
        """Stop and start again on the same ports (all scans and sessions are forgotten)."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.log_path and self.log_path.exists():
            self.log_path.unlink()


class EmulatorThread(EmulatorProcess):
    """The same emulator served from threads of the test process: no interpreter and Django start-up per use.

    The command line is parsed by ``manage.py nessus_emulator``'s own parser (so ``extra_args`` mean the same),
    and the instances listen on real loopback sockets. What it cannot do is what needs a separate process:
    ``log()`` (what the command prints), ``kill()`` of a process, or a command-line error exit — use
    ``EmulatorProcess`` (``emulator_factory(process=True)``) for those.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._fixed_port = kwargs.get("port") is not None
        super().__init__(*args, **kwargs)
        self.cluster: Any = None

    def start(self, timeout: float = 20.0) -> EmulatorThread:
        from scanners.emulator.instance import EmulatorConfig, Instance
        from scanners.emulator.server import Cluster
        from scanners.emulator.tls import ensure_certificate, server_context
        from scanners.management.commands.nessus_emulator import Command

        for attempt in range(20):  # a free port block may be taken between the probe and the bind
            args = ["--port", str(self.port), "--instances", str(self.instances), "--scan-seconds",
                    str(self.scan_seconds), *self.extra_args, *([] if self.https else ["--http"])]
            opts = vars(Command().create_parser("manage.py", "nessus_emulator").parse_args(args))
            config = EmulatorConfig(scan_seconds=opts["scan_seconds"], username=opts["username"],
                                    password=opts["password"], access_key=opts["access_key"],
                                    secret_key=opts["secret_key"])
            self.username, self.password = config.username, config.password
            self.access_key, self.secret_key = config.access_key, config.secret_key
            tls = None
            if not opts["http"]:
                from django.conf import settings

                cert_dir = Path(opts["cert_dir"]) if opts["cert_dir"] else settings.VAR_DIR / "tls"
                tls = server_context(*ensure_certificate(cert_dir))
            instances = [Instance(i, self.port + i, config, Command._faults(opts)) for i in range(self.instances)]
            self.cluster = Cluster(instances, opts["host"], tls)
            try:
                self.cluster.start()
                break
            except OSError:
                self.cluster.shutdown()
                if self._fixed_port or attempt == 19:
                    raise
                self.port = free_port_block(self.instances)
        if "--down" not in self.extra_args:
            for i in range(self.instances):  # listening already: one answer each proves the handlers work
                self.request(i, "GET", "/_emulator/state", timeout=timeout)
        return self

    def log(self) -> str:
        raise NotImplementedError("an in-process emulator prints nothing: use emulator_factory(process=True)")

    def stop(self, timeout: float = 10.0) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()
        self.cluster = None

    def kill(self) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.cluster is not None


_shared: dict[str, EmulatorProcess] = {}


def _stop_shared(keep: str | None = None) -> None:
    for key in [k for k in _shared if k != keep]:
        emu = _shared.pop(key)
        emu.__exit__(None, None, None)


atexit.register(_stop_shared)


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    """A 2-instance emulator (``--scan-seconds 1``, HTTP) served in-process, shared by the whole session and
    reset before each test (all instances up, scans, sessions, stats and faults forgotten). One second: the tests
    that run scans to their end wait for each (1.4 s with its pending and processing); 2 s cost about 50 s of
    test time a lane.

    Tests that need the command's output, a process to kill, or the CLI's exit codes use
    ``emulator_factory(process=True)``.
    """
    emu = _shared.get("session")
    if emu is None or not emu.running:
        emu = _shared["session"] = EmulatorThread(instances=2, scan_seconds=1).start()
    for inst in emu.cluster.instances:  # directly: a test may have left every instance down (no control API)
        emu.cluster.up(inst)
    for i in range(emu.instances):
        emu.control(i).reset()
    yield emu


@pytest.fixture
def emulator_factory() -> Iterator:
    """``emulator_factory(instances=…, scan_seconds=…, extra_args=[…], https=False, process=False)`` → a started
    emulator, stopped at the end of the test: served from threads of the test process, or with ``process=True``
    a real ``manage.py nessus_emulator`` subprocess (for its printed output, kills, restarts and exit codes)."""
    started: list[EmulatorProcess] = []

    def make(process: bool = False, **kwargs: Any) -> EmulatorProcess:
        emu = (EmulatorProcess if process else EmulatorThread)(**kwargs)
        started.append(emu)
        return emu.start()

    yield make
    for emu in started:
        emu.stop()
        if emu.log_path and emu.log_path.exists():
            emu.log_path.unlink()
