"""A throwaway PostgreSQL cluster for the benchmarks: Debian's (or any) ``initdb``/``pg_ctl``, a free port on
127.0.0.1, a temporary socket directory, trust auth, removed afterwards. Run as the ``postgres`` user
(``runuser``) when the benchmark runs as root, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.initdb = find_binary("initdb")
        self.pg_ctl = find_binary("pg_ctl")
        self.psql = find_binary("psql")
        self.root = Path(tempfile.mkdtemp(prefix="scanpool-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0

    @property
    def available(self) -> bool:
        return bool(self.initdb and self.pg_ctl and self.psql)

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_postgres else list(args)
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def start(self) -> ThrowawayPostgres:
        self.sockets.mkdir(parents=True)
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        os.chmod(self.root, 0o755)
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                self._run(self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                          "CREATE DATABASE scanpool")
                return self
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/scanpool"

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
