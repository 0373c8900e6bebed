"""A throwaway ``redis-server`` on a free loopback port, configured as production requires
(``maxmemory-policy noeviction``, a password), for tests and ``make test``.

The password is handed to ``redis-server`` on its standard input (``redis-server -`` reads configuration
there), so it never appears in a command line other local users can list; ``url`` carries it.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``persistent=True``: an append-only file in ``dir``, written on every command (``appendfsync always``), so a
    stop and a ``start()`` again (same port, password and directory) bring the data back, as a production Redis
    restarted with its data; by default nothing is persisted (a restart comes back empty)."""

    def __init__(self, port: int | None = None, *, persistent: bool = False) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self.dir = Path(tempfile.mkdtemp(prefix="scanpool-redis-"))
        self.password = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def url_without_password(self) -> str:
        """For tests that show an unauthenticated client is refused."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError(
                "redis-server is not installed: run `make test` (it installs it with apt), "
                "or `apt-get install redis-server`"
            )
        self.proc = subprocess.Popen(
            [
                binary,
                "-",  # configuration from stdin first (the password), then the options below
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]),
                "--maxmemory-policy", "noeviction",
                "--dir", str(self.dir),
                "--daemonize", "no",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.proc.stdin.write(f"requirepass {self.password}\n".encode())
        self.proc.stdin.close()
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (all data lost, unless ``persistent``)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
