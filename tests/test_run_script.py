"""``make run`` (scripts/run.sh): Ctrl-C stops everything quietly, without "a scanpool process exited" (which
means a crash). Ctrl-C is simulated as a terminal sends it: SIGINT to the whole foreground process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.emulator import free_port_block

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def test_ctrl_c_stops_everything_without_reporting_a_crash(tmp_path):
    port = free_port_block(4)
    env = {**os.environ, "REDIS_URL": f"redis://:run-test-password@127.0.0.1:{port}/0",
           "SCANPOOL_WEB_ADDR": f"127.0.0.1:{port + 1}", "SCANPOOL_EMULATOR_PORT": str(port + 2),
           "SCANPOOL_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal leaves SIGINT on
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # the worker is up and idle
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = Path(log.name).read_text()
    assert ">> stopping scanpool" in output
    assert "a scanpool process exited" not in output
    # Redis keeps its data and log in SCANPOOL_VAR_DIR (not the checkout's var/), its start-up chatter out of the
    # terminal.
    assert (tmp_path / "redis" / "redis.log").exists() and (tmp_path / "redis" / "appendonlydir").is_dir()
    assert "Reading config from stdin" not in output
    leftovers = subprocess.run(["pgrep", "-f", f"(--port {port + 2}|127.0.0.1:{port + 1}|--port {port} )"],
                               capture_output=True, text=True).stdout.split()
    assert leftovers == []
