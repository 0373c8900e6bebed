"""`make smoke`'s driver (started by scripts/smoke.sh inside a throwaway PostgreSQL cluster).

Runs scanpool the way the image does — every process through docker/entrypoint.sh with DJANGO_DEBUG=0 and its
secrets in files — on PostgreSQL (password over TCP) and a Redis with a password, then checks it end to end.
Each check prints PASS, FAIL or SKIPPED (loudly, with the reason). Exit status 0 only when every check passed or
was skipped.

Scans are submitted through the REST API (POST /api/v1/scans/, `Authorization: Token <key>` from
`manage.py create_api_token`) and followed to completion through the status URL the API answers with
(links.status, GET /api/v1/scans/{id}/). The database is read only to verify what the API cannot show (each
scan launched once on the scanner).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import requests
import urllib3
from smoke_api import ApiClient
from smoke_stack import (
    ENTRYPOINT,
    HOST,
    ROOT,
    WORK,
    Stack,
    can_connect,
    check,
    fernet_key,
    free_port,
    report,
    results,
    scanners_yaml,
    wait_for,
    write_secret,
)
from smoke_zones import several_machines

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


class Smoke(ApiClient):
    def __init__(self) -> None:
        self.stack = Stack()
        self.netns = not os.environ.get("SMOKE_NETNS_SKIPPED")
        self.pg_port = int(os.environ["SCANPOOL_PG_PORT"])
        self.redis_port = free_port()
        self.web_port = free_port()
        self.redis_password = secrets.token_urlsafe(24)
        self.metrics_token = secrets.token_urlsafe(24)
        self.emulator_port = 0  # chosen when the emulators start
        self.zone_ports = (0, 0)  # zone a's and zone b's emulator
        self.base_env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            "DJANGO_DEBUG": "0",
            "DJANGO_ALLOWED_HOSTS": HOST,
            "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
            "DATABASE_URL": f"postgres://scanpool@127.0.0.1:{self.pg_port}/scanpool",
            "DATABASE_PASSWORD_FILE": os.environ["PG_PASSWORD_FILE"],
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "REDIS_PASSWORD_FILE": write_secret("redis_password", self.redis_password),
            "DJANGO_SECRET_KEY_FILE": write_secret("django_secret_key", secrets.token_urlsafe(50)),
            "SCANPOOL_SECRET_KEYS_FILE": write_secret("scanpool_secret_keys", fernet_key()),
            "SCANPOOL_METRICS_TOKEN_FILE": write_secret("metrics_token", self.metrics_token),
            "SCANPOOL_VAR_DIR": str(WORK / "var"),
            "SCANPOOL_RESULTS_DIR": str(WORK / "results"),
            "DJANGO_STATIC_ROOT": str(WORK / "static"),
            "SCANPOOL_RECONCILE_INTERVAL": "10",
            "SCANPOOL_STALE_AFTER": "20",
            "SCANPOOL_HTTP_CONNECT_TIMEOUT": "3",
            "SCANPOOL_HTTP_READ_TIMEOUT": "10",
        }
        self.token: str | None = None
        self.status_paths: dict[str, str] = {}  # task id -> the status path the API answered with (links.status)

    # --- helpers -------------------------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, **extra}

    def entrypoint(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(ENTRYPOINT), *args], cwd=ROOT, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def web(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Host": HOST, "X-Forwarded-Proto": "https", **kwargs.pop("headers", {})}
        if self.token:
            headers.setdefault("Authorization", f"Token {self.token}")
        return requests.request(method, f"http://127.0.0.1:{self.web_port}{path}", headers=headers,
                                allow_redirects=False, timeout=30, **kwargs)

    def django(self) -> None:
        """This process reads the database (to verify, never to act) with the same settings as the services."""
        sys.path.insert(0, str(ROOT))
        sys.path.insert(0, str(ROOT / "docker"))
        import secret_env

        os.environ.update(self.base_env)
        os.environ.update(secret_env.resolved())
        os.environ["DJANGO_SETTINGS_MODULE"] = "scanpool_site.settings"
        import django

        django.setup()

    # --- the stack -------------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        binds = ["127.0.0.1"] + [os.environ[v] for v in ("SMOKE_CORE1", "SMOKE_CORE2") if self.netns]
        conf = WORK / "redis.conf"
        conf.write_text(
            f'port {self.redis_port}\nbind {" ".join(binds)}\nprotected-mode yes\nrequirepass "{self.redis_password}"\n'
            f"dir {WORK}\nappendonly yes\nappendfsync everysec\nsave \"\"\nmaxmemory-policy noeviction\n"
            "maxmemory 256mb\ndaemonize no\n"
        )
        conf.chmod(0o600)
        (WORK / "redis").mkdir(exist_ok=True)
        self.stack.start("redis", ["redis-server", str(conf)], self.env())
        import redis

        authed = redis.Redis(host="127.0.0.1", port=self.redis_port, password=self.redis_password)
        # This run's redis-server (still running), not whatever else might answer on the port.
        wait_for("redis", lambda: self.stack.alive("redis") and authed.ping(), 30)
        try:
            redis.Redis(host="127.0.0.1", port=self.redis_port).ping()
            refused = False
        except redis.AuthenticationError:
            refused = True
        except redis.ResponseError as exc:
            refused = "NOAUTH" in str(exc)
        check("Redis requires its password (a client without it is refused)", refused)
        policy = authed.config_get("maxmemory-policy").get("maxmemory-policy")
        check("Redis runs with AOF and noeviction", policy == "noeviction"
              and authed.config_get("appendonly").get("appendonly") == "yes", f"policy {policy}")

    def start_emulator(self, name: str, host: str, instances: int, scan_seconds: int,
                       netns: str | None = None) -> int:
        """Start an emulator on `instances` consecutive free ports; returns the first port. The ports are free
        when chosen, not reserved: another process may take one first (the machine is shared), so a start that
        fails with "Address already in use" is tried again on new ports, and "listening" means this emulator
        printed "ready" and still runs, never merely that something answers on the port."""
        env = {k: v for k, v in self.env(DJANGO_DEBUG="1").items() if not k.endswith("_FILE")}
        for _attempt in range(5):
            port = free_port(instances)
            cmd = ["sh", str(ENTRYPOINT), "nessus_emulator", "--host", host, "--port", str(port), "--instances",
                   str(instances), "--scan-seconds", str(scan_seconds), "--cert-dir", str(WORK / f"cert-{name}")]
            # The emulator stands in for a scanner: no database, keys or secrets (as in the compose profile).
            self.stack.start(name, cmd, env, netns=netns)
            wait_for(name, lambda: "ready" in self.stack.log(name) or not self.stack.alive(name), 60, 0.5)
            if self.stack.alive(name) or "Address already in use" not in self.stack.log(name):
                break
            self.stack.stop(name, forget_log=True)
        ok = self.stack.alive(name) and "ready" in self.stack.log(name) and can_connect(host, port, netns)
        check(f"emulator {name} listens on {host}:{port}" + (f" (namespace {netns})" if netns else ""), ok,
              self.stack.log(name)[-2000:])
        return port

    def scanners_yaml(self) -> str:
        pools = [("smoke_local", [f"https://127.0.0.1:{self.emulator_port + i}" for i in range(2)])]
        if self.netns:
            pools += [("smoke_a", [f"https://{os.environ['SMOKE_SA']}:{self.zone_ports[0]}"]),
                      ("smoke_b", [f"https://{os.environ['SMOKE_SB']}:{self.zone_ports[1]}"])]
        return scanners_yaml(pools)

    # --- checks ----------------------------------------------------------------------------------------------
    def check_postgres_password(self) -> None:
        import psycopg

        try:
            psycopg.connect(host="127.0.0.1", port=self.pg_port, user="scanpool", dbname="scanpool",
                            connect_timeout=5).close()
            refused = False
        except psycopg.OperationalError as exc:
            refused = "password" in str(exc)
        check("PostgreSQL refuses a TCP login without the password", refused)

    def run(self) -> None:
        self.check_postgres_password()
        self.start_redis()
        self.emulator_port = self.start_emulator("emulator-local", "127.0.0.1", 2, 8)
        if self.netns:
            self.zone_ports = tuple(self.start_emulator(f"emulator-{z}", os.environ[f"SMOKE_S{z.upper()}"], 1, 30,
                                                        os.environ[f"SMOKE_NS_S{z.upper()}"]) for z in "ab")

        built = self.entrypoint("collectstatic", "--noinput", "-v", "0")  # the image's build step
        check("collectstatic (image build step)", built.returncode == 0, built.stderr[-2000:])
        yaml_path = WORK / "scanners.yaml"
        yaml_path.write_text(self.scanners_yaml())
        migrated = self.entrypoint("migrate", SCANPOOL_SCANNERS_FILE=str(yaml_path),
                                   SMOKE_SCANNER_USER="admin", SMOKE_SCANNER_PASSWORD="admin")
        if not check("entrypoint migrate: migrations + load_scanners on PostgreSQL over TCP with a password",
                     migrated.returncode == 0, migrated.stderr[-3000:]):
            return
        self.check_deploy()
        self.start_web()
        self.django()
        self.get_token()

        # Two workers through the entrypoint, both on the loopback pool.
        for i in (1, 2):
            self.stack.start(f"worker-local-{i}", ["sh", str(ENTRYPOINT), "worker"],
                             self.env(WORKER_POOLS="smoke_local"), supervise=True)
        check("two workers (entrypoint worker) registered in Redis",
              wait_for("workers", lambda: self.registered_workers() >= 2, 60, 1),
              self.stack.log("worker-local-1")[-2000:])
        self.container_healthchecks()
        if not self.netns:
            self.check_ready()
        self.scans_complete("smoke_local", 4, timeout=180)

        if self.netns:
            several_machines(self)
        else:
            report("SKIPPED", "workers on several machines (network namespaces)", os.environ["SMOKE_NETNS_SKIPPED"])

    def check_deploy(self) -> None:
        result = self.entrypoint("check", "--deploy")
        issues = re.findall(r"^\?: \(([\w.]+)\)", result.stderr, re.M)
        # security.W021 (HSTS preload) is the operator's opt-in: docs/deployment.md "TLS".
        check("manage.py check --deploy is clean (DJANGO_DEBUG=0; only W021, HSTS preload, is opt-in)",
              result.returncode == 0 and set(issues) <= {"security.W021"}, result.stderr[-3000:])

    def start_web(self) -> None:
        self.stack.start("web", ["sh", str(ENTRYPOINT), "web"],
                         self.env(SCANPOOL_BIND=f"127.0.0.1:{self.web_port}", WEB_CONCURRENCY="2"))
        listening = f"Listening at: http://127.0.0.1:{self.web_port} "
        up = wait_for("gunicorn", lambda: self.stack.alive("web") and listening in self.stack.log("web")
                      and self.web("GET", "/admin/login/").status_code == 200, 90, 1)
        if not check("gunicorn (entrypoint web) serves the admin login with DJANGO_DEBUG=0", up,
                     self.stack.log("web")[-3000:]):
            raise SystemExit(1)
        redirect = requests.get(f"http://127.0.0.1:{self.web_port}/admin/login/", headers={"Host": HOST},
                                allow_redirects=False, timeout=10)
        check("plain HTTP (no X-Forwarded-Proto) is redirected to https",
              redirect.status_code == 301 and redirect.headers.get("Location", "").startswith("https://"),
              f"{redirect.status_code} {redirect.headers.get('Location')}")
        static = self.web("GET", "/static/admin/css/base.css")
        check("static files are served by the web process (collectstatic + WhiteNoise)",
              static.status_code == 200 and "text/css" in static.headers.get("Content-Type", ""),
              f"{static.status_code} {static.headers.get('Content-Type')}")
        ready = self.web("GET", "/readyz")
        failing = ready.json().get("failing", []) if ready.status_code == 503 else []
        check("/readyz answers 503 naming the workers while no worker runs yet", failing == ["workers"],
              f"{ready.status_code} {ready.text[:300]}")
        metrics = self.web("GET", "/metrics")
        check("/metrics without the bearer token is refused (401)", metrics.status_code == 401,
              f"{metrics.status_code} {metrics.text[:200]}")
        metrics = self.web("GET", "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"})
        check("/metrics with the bearer token (SCANPOOL_METRICS_TOKEN_FILE) answers 200",
              metrics.status_code == 200 and "# TYPE" in metrics.text, f"{metrics.status_code}")

    def check_ready(self) -> None:
        """/readyz once a worker serves every enabled pool and the workers have checked their scanners."""
        last: list[requests.Response] = []

        def ready() -> bool:
            last[:] = [self.web("GET", "/readyz")]
            return last[0].status_code == 200

        ok = wait_for("/readyz 200", ready, 120, 2)
        check("/readyz answers 200 once every pool has a live worker and a usable scanner", ok,
              f"{last[0].status_code} {last[0].text[:400]}" if last else "no answer")

    def container_healthchecks(self) -> None:
        """The compose/Dockerfile health checks (docker/healthcheck.py), with the services' environment."""
        worker = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), "worker"], cwd=ROOT,
                                env=self.env(), capture_output=True, text=True, timeout=60, check=False)
        check("worker healthcheck (healthcheck.py worker) is healthy", worker.returncode == 0, worker.stderr[-1000:])
        web_env = self.env(SCANPOOL_BIND=f"127.0.0.1:{self.web_port}")
        web = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), "web"], cwd=ROOT, env=web_env,
                             capture_output=True, text=True, timeout=60, check=False)
        check("web healthcheck (healthcheck.py web: /healthz) is healthy", web.returncode == 0, web.stderr[-1000:])
        stopped = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), "worker"], cwd=ROOT,
                                 env=self.env(REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
                                              REDIS_PASSWORD_FILE=write_secret("wrong", "wrong-password")),
                                 capture_output=True, text=True, timeout=60, check=False)
        check("worker healthcheck is unhealthy when Redis refuses it", stopped.returncode != 0)

    def registered_workers(self, pools: str | None = None) -> int:
        from django_rq import get_connection
        from rq import Worker

        workers = Worker.all(connection=get_connection())
        return len([w for w in workers if pools is None or any(q.name.endswith(pools) for q in w.queues)])

    def secrets_not_logged(self) -> None:
        """No secret (passwords, keys, tokens) in any process's output: web access log, workers, migrate…"""
        values = {"Redis password": self.redis_password, "metrics token": self.metrics_token,
                  "API token": self.token or "", "PostgreSQL password": Path(os.environ["PG_PASSWORD_FILE"])
                  .read_text().strip()}
        for name in ("django_secret_key", "scanpool_secret_keys"):
            values[name] = (WORK / "secrets" / name).read_text().strip()
        logs = {log.name: log.read_text(errors="replace") for log in WORK.glob("*.log")}
        leaks = [f"{what} in {log}" for what, value in values.items() if value
                 for log, text in logs.items() if value in text]
        check(f"no secret appears in the {len(logs)} process logs", bool(logs) and not leaks, ", ".join(leaks))


def main() -> int:
    smoke = Smoke()
    try:
        smoke.run()
    except SystemExit:
        pass
    except Exception as exc:  # a crash of the driver is a failure, reported with its cause
        import traceback

        traceback.print_exc()
        report("FAIL", "smoke driver", repr(exc))
    finally:
        smoke.stack.stop_all()
    smoke.secrets_not_logged()
    failed = [r for r in results if r[0] == "FAIL"]
    if any(r[0] == "FAIL" for r in results):
        for log in sorted(WORK.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"\n--- last lines of {log.name}\n" + "\n".join(tail))
    skipped = [r for r in results if r[0] == "SKIPPED"]
    print(f"\nsmoke: {len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed, "
          f"{len(skipped)} skipped (logs in {WORK}, removed at exit)", flush=True)
    for status, name, detail in failed + skipped:
        print(f"  {status}: {name}" + (f": {detail}" if detail else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
