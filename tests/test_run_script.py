"""``make run`` (scripts/run.sh): Ctrl-C stops everything quietly, without "a scanpool process exited" (which
means a crash). Ctrl-C is simulated as a terminal sends it: SIGINT to the whole foreground process group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.emulator import free_port_block

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration

# run.sh's children bind their ports seconds after free_port_block probed them free (migrate and setup_demo come
# first): meanwhile another process may take one (make test runs eight pytest processes, whose servers and probes
# pick ports the same way). The child that cannot listen exits, and run.sh, as it should, stops everything and
# exits before /healthz answers ("a scanpool process exited"; CI saw the emulator's port taken). That says nothing
# about Ctrl-C: the test starts run.sh again on other ports. Any other early exit fails the test, so does a port
# taken on every attempt (a run.sh that binds one port twice, say).
# "Address already in use": the emulator's output, redis-server's log; "That port is already in use": runserver's.
PORT_TAKEN = re.compile(r"Address already in use|That port is already in use")
ATTEMPTS = 5


def free_ports(count: int) -> int:
    """``free_port_block``, below the kernel's ephemeral range when there is room: a port there can also be taken
    by any outgoing connection's local end (every Redis and HTTP client of the test processes)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    if ephemeral_low > 21000:
        return free_port_block(count, start=20000, end=ephemeral_low)
    return free_port_block(count)


def start_run_sh(var: Path) -> tuple[subprocess.Popen, int]:
    """``bash scripts/run.sh`` with its var dir, Redis, web server and emulator on a fresh block of 4 ports."""
    port = free_ports(4)
    env = {**os.environ, "REDIS_URL": f"redis://:run-test-password@127.0.0.1:{port}/0",
           "SCANPOOL_WEB_ADDR": f"127.0.0.1:{port + 1}", "SCANPOOL_EMULATOR_PORT": str(port + 2),
           "SCANPOOL_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    var.mkdir()
    with (var / "run.log").open("w") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal leaves SIGINT on
        )
    return proc, port


def serving(proc: subprocess.Popen, port: int, var: Path, deadline: float) -> bool:
    """Wait until run.sh's web server answers /healthz (True) or run.sh has exited (False)."""
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        assert time.monotonic() < deadline, output_of(var)[-3000:]
        time.sleep(0.5)
    return False


def output_of(var: Path) -> str:
    return (var / "run.log").read_text(errors="replace")


@contextmanager
def run_sh_serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path, list[int]]]:
    """run.sh started and serving /healthz (again on other ports when one was taken before it could listen), its
    port block, var dir and the port blocks of every attempt; killed at the end of the block if still running."""
    ports_used = []
    for attempt in range(ATTEMPTS):
        var = tmp_path / f"attempt-{attempt}"
        proc, port = start_run_sh(var)
        ports_used.append(port)
        try:
            if serving(proc, port, var, deadline=time.monotonic() + 90):
                yield proc, port, var, ports_used
                return
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        redis_log = var / "redis" / "redis.log"
        why = output_of(var) + (redis_log.read_text(errors="replace") if redis_log.exists() else "")
        # Exited before serving: only another process holding one of its ports excuses that.
        assert PORT_TAKEN.search(why), f"run.sh exited with {proc.returncode} before serving:\n{why[-3000:]}"
    pytest.fail(f"a port was taken on each of {ATTEMPTS} attempts; the last:\n{why[-3000:]}")


def assert_nothing_left(ports_used: list[int]) -> None:
    for first in ports_used:  # nothing left of this run nor of an attempt that found a port taken
        leftovers = subprocess.run(["pgrep", "-f", f"(--port {first + 2}|127.0.0.1:{first + 1}|--port {first} )"],
                                   capture_output=True, text=True).stdout.split()
        assert leftovers == []


def test_ctrl_c_stops_everything_without_reporting_a_crash(tmp_path):
    with run_sh_serving(tmp_path) as (proc, _, var, ports_used):
        time.sleep(2)  # the worker is up and idle
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 130
    output = output_of(var)
    assert ">> stopping scanpool" in output
    assert "a scanpool process exited" not in output
    # Redis keeps its data and log in SCANPOOL_VAR_DIR (not the checkout's var/), its start-up chatter out of the
    # terminal.
    assert (var / "redis" / "redis.log").exists() and (var / "redis" / "appendonlydir").is_dir()
    assert "Reading config from stdin" not in output
    assert_nothing_left(ports_used)


def test_a_process_that_dies_stops_the_others_and_make_run_fails(tmp_path):
    """A crash is not a clean stop: run.sh says which way it ended and exits non-zero (make run fails with it)."""
    with run_sh_serving(tmp_path) as (proc, port, var, ports_used):
        emulator = subprocess.run(["pgrep", "-f", f"nessus_emulator --port {port + 2}"], capture_output=True,
                                  text=True).stdout.split()
        assert emulator, output_of(var)[-3000:]
        for pid in emulator:
            os.kill(int(pid), signal.SIGKILL)  # the emulator dies
        assert proc.wait(60) == 1
    output = output_of(var)
    assert "a scanpool process exited (status 137): stopping the others" in output
    assert ">> stopping scanpool" in output
    assert_nothing_left(ports_used)
