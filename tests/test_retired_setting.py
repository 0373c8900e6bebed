"""A retired setting (``SCANPOOL_TASK_TTL_DAYS``) stops every scanpool process at start-up — manage.py commands, the
web server (gunicorn, as the container starts it) and the scan workers — with one line naming the variable and its
replacement, exit status 1, and no traceback. It stays an error: it is never silently ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable, "DJANGO_DEBUG": "1",
            "SCANPOOL_VAR_DIR": str(tmp_path), "SCANPOOL_TASK_TTL_DAYS": "90", **extra}


def assert_one_clear_line(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()
    assert "SCANPOOL_TASK_TTL_DAYS" in line
    assert "SCANPOOL_TTL_COMPLETED_DAYS" in line and "SCANPOOL_TTL_FAILED_DAYS" in line
    assert proc.stdout == ""


@pytest.mark.parametrize("args", [["reconcile"], ["check"], ["cleanup_tasks", "-v", "0"], ["help"],
                                  ["scanworker", "--burst"]])
def test_manage_py_commands_stop_with_one_line(tmp_path, args):
    proc = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env(tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert_one_clear_line(proc)


@pytest.mark.parametrize("command", ["web", "worker"])
def test_the_web_server_and_the_workers_stop_with_one_line(tmp_path, command):
    """As the container runs them: docker/entrypoint.sh web (gunicorn) and worker (manage.py scanworker)."""
    proc = subprocess.run(["sh", str(ENTRYPOINT), command],
                          env=env(tmp_path, SCANPOOL_BIND=f"127.0.0.1:{free_port()}", WEB_CONCURRENCY="1"),
                          capture_output=True, text=True, timeout=60)
    assert_one_clear_line(proc)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SCANPOOL_RETRY_INTERVALS", "1,x,4", "whole seconds"), ("SCANPOOL_RETRY_INTERVALS", "1,-2", "negative"),
    ("SCANPOOL_BREAKER_THRESHOLD", "five", "integer"), ("SCANPOOL_HTTP_READ_TIMEOUT", "30s", "number"),
    ("SCANPOOL_BREAKER_THRESHOLD", "0", "at least 1"), ("SCANPOOL_STEP_TIMEOUT", "0", "at least 1"),
    ("SCANPOOL_TTL_COMPLETED_DAYS", "0", "at least 1"), ("SCANPOOL_API_MAX_UPLOAD_BYTES", "-1", "at least 1"),
    ("SCANPOOL_HTTP_CONNECT_TIMEOUT", "0", "at least 0.1"), ("SCANPOOL_HTTP_READ_TIMEOUT", "nan", "at least"),
    ("SCANPOOL_TIMEOUT_MAX_SECONDS", "30", "at least 60")])
def test_a_malformed_setting_stops_a_command_with_one_line_naming_it(tmp_path, name, value, says):
    settings_env = {k: v for k, v in env(tmp_path).items() if k != "SCANPOOL_TASK_TTL_DAYS"}
    proc = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], env={**settings_env, name: value},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()
    assert name in line and repr(value) in line and says in line
