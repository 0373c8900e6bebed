"""``manage.py scanworker`` as a real subprocess on the test database and the test Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def subprocess_database_url() -> str:
    """A DATABASE_URL for subprocesses: the test database this session runs on (SQLite file or PostgreSQL)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = quote(db.get("HOST") or "", safe="")  # a unix socket directory is percent-encoded
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def worker_env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update({
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SCANPOOL_RETRY_INTERVALS": "1,1",
        "SCANPOOL_LOG_LEVEL": "INFO",
        "SCANPOOL_RESULTS_DIR": str(settings.SCANPOOL_RESULTS_DIR),
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


class WorkerProcess:
    def __init__(self, pools: list[str] | None = None, *, args: list[str] | None = None, **env: str) -> None:
        self.pools = pools
        self.args = list(args or [])
        self.env = worker_env(**env)
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._stop_requested = False

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, str(ROOT / "manage.py"), "scanworker", *self.args]
        if self.pools:
            cmd += ["--pools", ",".join(self.pools)]
        log = tempfile.NamedTemporaryFile(prefix="scanworker-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self._stop_requested = False
        # Own session: SIGKILL of the group takes the worker and its scheduler down together, like a dead host.
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while not self.registered():
            if self.proc.poll() is not None:
                raise RuntimeError(f"scanworker exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"scanworker did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def registered(self) -> bool:
        """The worker has registered itself in Redis (it is about to take jobs)."""
        import redis
        from rq import Worker

        conn = redis.Redis.from_url(self.env["REDIS_URL"])
        return any(w.pid == self.proc.pid for w in Worker.all(connection=conn))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the worker and its scheduler process (the whole process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def request_stop(self) -> None:
        """SIGTERM (a warm shutdown), without waiting: ``stop()`` then waits. Several workers asked first stop side
        by side instead of one after the other (each takes about a second: its scheduler ends after its sleep)."""
        if self.proc and self.proc.poll() is None and not self._stop_requested:
            self.proc.send_signal(signal.SIGTERM)
            self._stop_requested = True

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (a warm shutdown: the job in hand is finished), SIGKILL after ``grace`` seconds."""
        if self.proc and self.proc.poll() is None:
            self.request_stop()  # a second SIGTERM would be RQ's cold shutdown
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:
            if self.proc:
                os.killpg(self.proc.pid, signal.SIGKILL)  # a leftover scheduler child
        except ProcessLookupError:
            pass

    def cleanup(self) -> None:
        """End of a test: its assertions are done, so a job still in hand (a poll of a scanner the test left
        down, say) is not waited for — SIGKILL after a short grace. Redis is flushed after it, the DB reset."""
        self.stop(grace=2.0)
        if self.log_path and self.log_path.exists() and not os.environ.get("SCANPOOL_TEST_KEEP_LOGS"):
            self.log_path.unlink()


@pytest.fixture
def workers(redis_conn):
    """Start scan workers with ``workers(pools, **kwargs)``; every one started is stopped after the test."""
    started: list[WorkerProcess] = []

    def start(pools: list[str] | None = None, **kwargs) -> WorkerProcess:
        w = WorkerProcess(pools, **kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.request_stop()
    for w in started:
        w.cleanup()
