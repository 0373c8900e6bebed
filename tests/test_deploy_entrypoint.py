"""docker/entrypoint.sh and docker/secret_env.py: secrets come from files (Compose secrets) into the
environment of the scanpool process only, percent-encoded into the URLs; a bad secret file is a clear error
naming the variable; the entrypoint runs manage.py commands as the image does (here on the venv's Python)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = ROOT / "docker" / "secret_env.py"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def clean_env(**extra: str) -> dict[str, str]:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable}
    env.update(extra)
    return env


def secret_env(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SECRET_ENV)], env=clean_env(**env), capture_output=True, text=True,
                          timeout=30)


def write(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    return str(path)


def test_password_files_go_percent_encoded_into_the_urls(tmp_path):
    password = "p@ss:/w#rd %&?"
    result = secret_env(
        DATABASE_URL="postgres://scanpool@postgres:5432/scanpool",
        DATABASE_PASSWORD_FILE=write(tmp_path / "pg", password),
        REDIS_URL="redis://redis:6379/0",
        REDIS_PASSWORD_FILE=write(tmp_path / "redis", password),
        DJANGO_SECRET_KEY_FILE=write(tmp_path / "dk", "django 'key' $x"),
    )
    assert result.returncode == 0, result.stderr
    # Evaluated by a shell exactly as the entrypoint does: the values come back intact.
    script = result.stdout + 'printf "%s\\n" "$DATABASE_URL" "$REDIS_URL" "$DJANGO_SECRET_KEY"'
    shown = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    encoded = "p%40ss%3A%2Fw%23rd%20%25%26%3F"
    assert shown == [f"postgres://scanpool:{encoded}@postgres:5432/scanpool", f"redis://:{encoded}@redis:6379/0",
                     "django 'key' $x"]
    from urllib.parse import unquote, urlsplit

    assert unquote(urlsplit(shown[1]).password) == password


def test_nothing_is_exported_without_secret_files():
    result = secret_env(REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 0 and result.stdout == ""


def test_bad_secret_files_are_errors_naming_the_variable(tmp_path):
    missing = secret_env(DJANGO_SECRET_KEY_FILE=str(tmp_path / "nope"))
    assert missing.returncode != 0 and "DJANGO_SECRET_KEY_FILE=" in missing.stderr and "cannot read" in missing.stderr
    empty = secret_env(SCANPOOL_SECRET_KEYS_FILE=write(tmp_path / "empty", ""))
    assert empty.returncode != 0 and "SCANPOOL_SECRET_KEYS_FILE" in empty.stderr and "empty" in empty.stderr
    no_url = secret_env(REDIS_PASSWORD_FILE=write(tmp_path / "pw", "x"))
    assert no_url.returncode != 0 and "REDIS_URL" in no_url.stderr
    # The secret itself never reaches the error output.
    wrong = secret_env(REDIS_URL="not a url", REDIS_PASSWORD_FILE=write(tmp_path / "pw2", "s3cret-value"))
    assert wrong.returncode != 0 and "s3cret-value" not in wrong.stderr + wrong.stdout


def test_entrypoint_runs_manage_py_with_secrets_from_files(tmp_path):
    """`entrypoint.sh migrate` then `entrypoint.sh check --deploy` with DJANGO_DEBUG=0 and every secret from a file."""
    env = clean_env(
        DJANGO_DEBUG="0",
        DJANGO_ALLOWED_HOSTS="scanpool.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_PASSWORD_FILE=write(tmp_path / "redis", "pw"),
        DJANGO_SECRET_KEY_FILE=write(tmp_path / "dk", "k" * 20 + os.urandom(20).hex()),
        SCANPOOL_SECRET_KEYS_FILE=write(tmp_path / "fk", Fernet.generate_key().decode()),
        SCANPOOL_VAR_DIR=str(tmp_path / "var"),
    )
    migrate = subprocess.run(["sh", str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "db.sqlite3").exists()
    check = subprocess.run(["sh", str(ENTRYPOINT), "check", "--deploy"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr
    # HSTS preload is the operator's opt-in (DJANGO_HSTS_PRELOAD=1): the only deployment warning allowed.
    warnings = [line for line in check.stderr.splitlines() if line.startswith("?: (")]
    assert [w.split(")")[0] for w in warnings] in ([], ["?: (security.W021"]), check.stderr


def test_entrypoint_stops_on_a_bad_secret_file(tmp_path):
    env = clean_env(DJANGO_SECRET_KEY_FILE=str(tmp_path / "missing"), DATABASE_URL=f"sqlite:///{tmp_path / 'x'}")
    result = subprocess.run(["sh", str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY_FILE" in result.stderr and not (tmp_path / "x").exists()
