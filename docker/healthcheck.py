"""Container health checks (standard library only, so they start fast).

  healthcheck.py web      GET /healthz on the local gunicorn answers 200
  healthcheck.py worker   an RQ worker of this host is registered in Redis and its heartbeat is fresh
  healthcheck.py tcp PORT something listens on 127.0.0.1:PORT (the MCP server, the emulator)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import secret_env  # docker/secret_env.py, next to this file


def web() -> int:
    bind = os.environ.get("SCANPOOL_BIND", "0.0.0.0:8000")
    port = bind.rsplit(":", 1)[-1]
    hosts = [h.strip().lstrip(".") for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = next((h for h in hosts if h != "*"), "localhost")
    # X-Forwarded-Proto as the TLS proxy sends it: /healthz over plain HTTP must not be redirected to https.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz",
                                     headers={"Host": host, "X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 (fixed local URL)
        return 0 if response.status == 200 else 1


def worker() -> int:
    # Django and rq are needed to read the registry; run them in a child so a hang is bounded by the timeout.
    code = (
        "import socket, sys, django; django.setup()\n"
        "from django_rq import get_connection\n"
        "from rq import Worker\n"
        "from datetime import datetime, timezone\n"
        "now = datetime.now(timezone.utc)\n"
        "def age(w):\n"
        "    beat = w.last_heartbeat\n"
        "    beat = beat if beat.tzinfo else beat.replace(tzinfo=timezone.utc)\n"
        "    return (now - beat).total_seconds()\n"
        "mine = [w for w in Worker.all(connection=get_connection()) if w.hostname == socket.gethostname()]\n"
        "sys.exit(0 if any(w.last_heartbeat and age(w) < 120 for w in mine) else 1)\n"
    )
    # The healthcheck runs with the container's environment, not the entrypoint's: load the secret files too.
    env = {**os.environ, **secret_env.resolved(), "DJANGO_SETTINGS_MODULE": "scanpool_site.settings"}
    app_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=app_dir, timeout=25, check=False).returncode


def tcp(port: str) -> int:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=4):
        return 0


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "web"
    try:
        sys.exit({"web": web, "worker": worker}.get(kind, lambda: tcp(sys.argv[2]))())
    except Exception as exc:  # any failure is "unhealthy", said in one line
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
