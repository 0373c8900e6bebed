"""Settings come from the environment: defaults for development, `check --deploy` clean for production,
clear errors for bad values, and every variable documented in the README."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**values: str) -> dict[str, str]:
    """The current environment without any scanpool/Django setting, plus ``values``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SCANPOOL_", "DATABASE_", "REDIS_", "SQLITE_", "WORKER_"))
    }
    env.update(values)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The production settings docs/configuration.md documents."""
    values = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "k" + Fernet.generate_key().decode() + Fernet.generate_key().decode(),
        "DJANGO_ALLOWED_HOSTS": "scanpool.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        "REDIS_URL": "redis://:0123456789abcdef0123456789abcdef@redis.example.com:6379/0",
        "SCANPOOL_SECRET_KEYS": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
        "SCANPOOL_METRICS_TOKEN": "metrics-token-0123456789abcdef",
    }
    values.update(extra)
    return clean_env(**values)


def test_check_deploy_is_clean_with_production_values(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path, DJANGO_HSTS_PRELOAD="1")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_a_redis_without_password(tmp_path):
    env = production_env(tmp_path, DJANGO_HSTS_PRELOAD="1", REDIS_URL="redis://redis.example.com:6379/0")
    result = run(["manage.py", "check", "--deploy"], env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "scanpool.E002" in output and "REDIS_URL has no password" in output
    assert "requirepass" in output  # the hint says how
    assert set(re.findall(r"\((\w+\.\w+)\)", output)) == {"scanpool.E002"}


def test_check_deploy_warns_about_development_keys_from_var(tmp_path):
    """A DEBUG=1 install checked with --deploy is told its keys are the generated development ones."""
    env = clean_env(DJANGO_DEBUG="1", SCANPOOL_VAR_DIR=str(tmp_path / "var"),
                    DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    result = run(["manage.py", "check", "--deploy"], env)
    output = result.stdout + result.stderr
    assert "scanpool.W001" in output
    assert "DJANGO_SECRET_KEY and SCANPOOL_SECRET_KEYS not set" in output


@pytest.mark.parametrize("missing", [["SCANPOOL_SECRET_KEYS"], ["DJANGO_SECRET_KEY"],
                                     ["DJANGO_SECRET_KEY", "SCANPOOL_SECRET_KEYS"]])
def test_production_refuses_to_start_without_keys(tmp_path, missing):
    env = production_env(tmp_path, SCANPOOL_VAR_DIR=str(tmp_path / "var"))
    for name in missing:
        del env[name]
    result = run(["manage.py", "check"], env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{' and '.join(missing)} must be set when DJANGO_DEBUG=0" in output
    assert "Fernet.generate_key()" in output and "secrets.token_urlsafe" in output  # how to generate them
    assert not (tmp_path / "var").exists()  # nothing generated in production


def test_debug_is_off_unless_asked_for(tmp_path):
    """Without DJANGO_DEBUG the settings are production's: no keys, no start."""
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", SCANPOOL_VAR_DIR=str(tmp_path / "var"))
    result = run(["manage.py", "check"], env)
    assert result.returncode != 0
    assert "must be set when DJANGO_DEBUG=0" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe': expected one of 1/0, true/false"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_BREAKER_THRESHOLD": "five"},
         "SCANPOOL_BREAKER_THRESHOLD='five': expected an integer"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_SECRET_KEYS": "not-a-key"},
         "SCANPOOL_SECRET_KEYS entry #1 is not a valid Fernet key"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_METRICS_ALLOWED_IPS": "10.0.0.0/8,intranet"},
         "SCANPOOL_METRICS_ALLOWED_IPS entry 'intranet' is not an IP address or network"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_API_SUBMIT_RATE": "sixty/min"},
         "SCANPOOL_API_SUBMIT_RATE='sixty/min': expected requests per period, e.g. 60/min"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_API_READ_RATE": "1200/week"},
         "SCANPOOL_API_READ_RATE='1200/week': expected requests per period, e.g. 60/min"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_CLEANUP_AT": "25:00"},
         "SCANPOOL_CLEANUP_AT='25:00': expected a UTC time HH:MM, e.g. 03:30"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_CLEANUP_AT": "3h"},
         "SCANPOOL_CLEANUP_AT='3h': expected a UTC time HH:MM, e.g. 03:30"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_LOG_LEVEL": "LOUD"},
         "SCANPOOL_LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"DJANGO_DEBUG": "1", "SCANPOOL_TIMEOUT_MIN_SECONDS": "3000000"},
         "SCANPOOL_TIMEOUT_MIN_SECONDS='3000000': must be at most SCANPOOL_TIMEOUT_MAX_SECONDS (2592000)"),
    ],
)
def test_bad_values_are_clear_errors(env, message, tmp_path):
    result = run(["manage.py", "check"], clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                                                   SCANPOOL_VAR_DIR=str(tmp_path / "var"), **env))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_a_log_level_in_lower_case_is_accepted(tmp_path):
    # scanpool-mcp takes SCANPOOL_LOG_LEVEL=debug; every manage.py command stopped on it with a logging traceback.
    result = run(["manage.py", "check"], clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                                                   SCANPOOL_VAR_DIR=str(tmp_path / "var"), DJANGO_DEBUG="1",
                                                   SCANPOOL_LOG_LEVEL="debug"))
    assert result.returncode == 0, result.stderr


SETTINGS_CODE = (
    "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'scanpool_site.settings';"
    "from django.conf import settings as s;"
    "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.REDIS_URL, s.ALLOWED_HOSTS)"
)


def test_development_defaults(tmp_path):
    result = run(["-c", SETTINGS_CODE], clean_env(DJANGO_DEBUG="1"))
    assert result.returncode == 0, result.stderr
    debug, engine, name, redis_url, hosts = result.stdout.split(" ", 4)
    assert debug == "True" and engine == "django.db.backends.sqlite3"
    assert name == str(ROOT / "var" / "scanpool.sqlite3")
    assert redis_url == "redis://127.0.0.1:6379/0"
    assert "127.0.0.1" in hosts

    result = run(["-c", SETTINGS_CODE], clean_env(DJANGO_DEBUG="1", DATABASE_URL="postgres://u:p@db.example.com:5432/scanpool"))
    assert result.returncode == 0, result.stderr
    assert "django.db.backends.postgresql scanpool" in result.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_development_install_generates_private_keys_and_database(tmp_path):
    """First run: random keys in var/ (0600, var/ 0700), the SQLite database and its WAL files 0600; later runs
    (and concurrent processes) read the same keys."""
    var = tmp_path / "var"
    env = clean_env(DJANGO_DEBUG="1", SCANPOOL_VAR_DIR=str(var))
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'scanpool_site.settings';"
        "from django.conf import settings as s; from scanpool_site import crypto;"
        "print(s.SECRET_KEY, s.SCANPOOL_SECRET_KEYS[0], crypto.decrypt(crypto.encrypt('x')))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = {proc.communicate(timeout=120)[0] for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(outputs) == 1, outputs  # racing first runs agree on one key
    secret_key, fernet_key, roundtrip = outputs.pop().split()
    assert roundtrip == "x"
    assert secret_key == (var / "django-secret-key").read_text().strip()
    assert fernet_key == (var / "fernet-key").read_text().strip()
    assert len(secret_key) >= 50 and "insecure" not in secret_key
    Fernet(fernet_key.encode())  # a real Fernet key
    assert _mode(var) == 0o700
    assert _mode(var / "django-secret-key") == 0o600 and _mode(var / "fernet-key") == 0o600
    assert sorted(p.name for p in var.iterdir()) == ["django-secret-key", "fernet-key", "scanpool.sqlite3"]

    result = run(["manage.py", "migrate", "--noinput", "-v", "0"], env)
    assert result.returncode == 0, result.stderr
    for name in ("scanpool.sqlite3", "scanpool.sqlite3-wal", "scanpool.sqlite3-shm"):
        if (var / name).exists():
            assert _mode(var / name) == 0o600, name
    assert (var / "scanpool.sqlite3").stat().st_size > 0

    # A second run keeps the keys.
    again = run(["-c", code], env)
    assert again.stdout.split()[:2] == [secret_key, fernet_key]


def test_an_existing_install_is_tightened(tmp_path):
    """A var/ and database created by an older release (0755 / 0644) are made private on start."""
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    var.chmod(0o755)
    for name in ("scanpool.sqlite3", "scanpool.sqlite3-wal"):
        (var / name).write_bytes(b"")
        (var / name).chmod(0o644)
    result = run(["-c", SETTINGS_CODE], clean_env(DJANGO_DEBUG="1", SCANPOOL_VAR_DIR=str(var)))
    assert result.returncode == 0, result.stderr
    assert _mode(var) == 0o700
    assert _mode(var / "scanpool.sqlite3") == 0o600 and _mode(var / "scanpool.sqlite3-wal") == 0o600


def test_every_environment_variable_is_documented_in_the_readme():
    settings_source = (ROOT / "scanpool_site" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list)\(\s*"([A-Z0-9_]+)"', settings_source))
    names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', settings_source))
    assert {"DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"} <= names
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(name for name in names if f"`{name}`" not in readme)
    assert not undocumented, f"add these to the README's configuration table: {undocumented}"


@pytest.mark.django_db
def test_the_test_database_is_the_one_asked_for():
    """SCANPOOL_TEST_DATABASE_URL (the PostgreSQL lane of make test) really puts the tests on that server: until
    2026-12-02 a connection made during Django's set-up kept the lane on SQLite while its settings said otherwise."""
    from django.db import connection

    url = os.environ.get("SCANPOOL_TEST_DATABASE_URL", "")
    expected = "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
    assert connection.vendor == expected
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()" if expected == "postgresql" else "SELECT sqlite_version()")
        assert cursor.fetchone()[0]
