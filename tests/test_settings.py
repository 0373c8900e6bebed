"""Settings come from the environment: defaults for development, `check --deploy` clean for production,
clear errors for bad values, and every variable documented in the README."""

from __future__ import annotations

import os
import re
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
    return clean_env(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="k" + Fernet.generate_key().decode() + Fernet.generate_key().decode(),
        DJANGO_ALLOWED_HOSTS="scanpool.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        REDIS_URL="redis://redis.example.com:6379/0",
        SCANPOOL_SECRET_KEYS=f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
        **extra,
    )


def test_check_deploy_is_clean_with_production_values(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path, DJANGO_HSTS_PRELOAD="1")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_what_is_missing(tmp_path):
    env = production_env(tmp_path)
    del env["SCANPOOL_SECRET_KEYS"]
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "scanpool.W001" in output and "SCANPOOL_SECRET_KEYS is not set" in output
    # HSTS preload is opt-in (DJANGO_HSTS_PRELOAD=1): the only other note is Django's reminder about it.
    assert set(re.findall(r"\((\w+\.\w+)\)", output)) == {"scanpool.W001", "security.W021"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe': expected one of 1/0, true/false"),
        ({"SCANPOOL_BREAKER_THRESHOLD": "five"}, "SCANPOOL_BREAKER_THRESHOLD='five': expected an integer"),
        ({"SCANPOOL_SECRET_KEYS": "not-a-key"}, "SCANPOOL_SECRET_KEYS entry #1 is not a valid Fernet key"),
    ],
)
def test_bad_values_are_clear_errors(env, message, tmp_path):
    result = run(["manage.py", "check"], clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", **env))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_development_defaults(tmp_path):
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'scanpool_site.settings';"
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.REDIS_URL, s.ALLOWED_HOSTS)"
    )
    result = run(["-c", code], clean_env())
    assert result.returncode == 0, result.stderr
    debug, engine, name, redis_url, hosts = result.stdout.split(" ", 4)
    assert debug == "True" and engine == "django.db.backends.sqlite3"
    assert name == str(ROOT / "var" / "scanpool.sqlite3")
    assert redis_url == "redis://127.0.0.1:6379/0"
    assert "127.0.0.1" in hosts

    result = run(["-c", code], clean_env(DATABASE_URL="postgres://u:p@db.example.com:5432/scanpool"))
    assert result.returncode == 0, result.stderr
    assert "django.db.backends.postgresql scanpool" in result.stdout


def test_every_environment_variable_is_documented_in_the_readme():
    settings_source = (ROOT / "scanpool_site" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list)\(\s*"([A-Z0-9_]+)"', settings_source))
    names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', settings_source))
    assert {"DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"} <= names
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(name for name in names if f"`{name}`" not in readme)
    assert not undocumented, f"add these to the README's configuration table: {undocumented}"
