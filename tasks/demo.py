"""The demo set-up of ``make run``: an ``admin`` superuser with an API token, and the ``demo`` pool
whose scanners are the Nessus emulator instances that ``scripts/run.sh`` starts. Idempotent."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from scanners.config import Plan, load_config, read_config
from tasks.models import ApiToken

DEMO_USER = "admin"
DEMO_POOL = "demo"
PASSWORD_FILE = "demo-admin-password"
CONFIG_FILE = "demo-scanners.yaml"


@dataclass
class DemoAdmin:
    username: str
    password: str | None  # None: the user changed it since; we don't know it (and don't reset it)
    password_source: str
    token: str  # the demo API key, kept in var/demo-api-token (the database holds only its hash)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    path.chmod(0o600)


def ensure_demo_admin(var_dir: Path, env_password: str | None) -> DemoAdmin:
    """Create (once) the ``admin`` superuser and its API token.

    The password is ``env_password`` (``SCANPOOL_DEMO_PASSWORD``, applied on every run) or one generated
    on the first run and kept in ``var/demo-admin-password`` (0600). A password changed in the admin is
    left alone.
    """
    password_file = var_dir / PASSWORD_FILE
    user_model = get_user_model()
    with transaction.atomic():
        user = user_model.objects.filter(username=DEMO_USER).first()
        password: str | None
        if env_password:
            password, source = env_password, "from SCANPOOL_DEMO_PASSWORD"
        elif password_file.exists():
            password, source = password_file.read_text().strip(), f"stored in {password_file}"
        elif user is None:
            password = secrets.token_urlsafe(12)
            _write_private(password_file, password)
            source = f"generated, stored in {password_file}"
        else:
            password = None
        if user is None:
            user = user_model.objects.create_superuser(DEMO_USER, email="admin@localhost", password=password)
        elif env_password:
            if not user.check_password(env_password):
                user.set_password(env_password)
                user.save(update_fields=["password"])
        elif password is None or not user.check_password(password):
            password, source = None, "changed since the demo set-up (unchanged; set SCANPOOL_DEMO_PASSWORD to reset it)"
        if not (user.is_superuser and user.is_staff and user.is_active):
            user.is_superuser = user.is_staff = user.is_active = True
            user.save(update_fields=["is_superuser", "is_staff", "is_active"])
    return DemoAdmin(DEMO_USER, password, source, _demo_token(var_dir, user))


TOKEN_FILE = "demo-api-token"
TOKEN_NAME = "demo"


def _demo_token(var_dir: Path, user) -> str:
    """The demo API token's key: issued once and kept in ``var/demo-api-token`` (0600) so every run can print
    it (the database holds only its hash). A token revoked or deleted in the admin is issued again."""

    key_file = var_dir / TOKEN_FILE
    if key_file.exists():
        key = key_file.read_text().strip()
        found = ApiToken.find(key)
        if found is not None and found.user_id == user.pk:
            return key
    ApiToken.objects.filter(user=user, name=TOKEN_NAME).delete()
    _, key = ApiToken.issue(user, TOKEN_NAME)
    _write_private(key_file, key)
    return key


def demo_config_yaml(port: int, instances: int, poll_interval: int = 5) -> str:
    """The demo pool as load_scanners YAML: emulator instance *i* listens on ``port + i``."""
    lines = [
        "# Written by `manage.py setup_demo` on every `make run` (edits here are overwritten):",
        "# the demo pool, whose scanners are the Nessus emulator instances scripts/run.sh starts.",
        f"# Ports come from SCANPOOL_EMULATOR_PORT ({port}) and SCANPOOL_EMULATOR_INSTANCES ({instances}).",
        "pools:",
        f"  - name: {DEMO_POOL}",
        "    description: Demo pool on the bundled Nessus emulator (documentation address ranges only)",
        '    scope: ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "*.example.com", "localhost"]',
        "    max_queued: 100",
        "    scan_timeout: 2h",
        f"    poll_interval: {poll_interval}s",
        "    scanners:",
    ]
    for index in range(instances):
        lines += [
            f"      - name: emulator-{index + 1}",
            "        kind: nessus",
            f"        description: Nessus emulator instance {index + 1} (HTTPS, self-signed)",
            f"        url: https://127.0.0.1:{port + index}",
            "        username: admin               # the emulator's default login",
            "        password: admin",
            "        verify_tls: false             # the emulator's certificate is self-signed",
            f"        max_concurrent_scans: {2 if index == 0 else 1}",
        ]
    return "\n".join(lines) + "\n"


def load_demo_pool(var_dir: Path, port: int, instances: int) -> tuple[Path, Plan]:
    """Write ``var/demo-scanners.yaml`` and load it; demo scanners beyond ``instances`` are disabled."""
    path = var_dir / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(demo_config_yaml(port, instances))
    return path, load_config(read_config(path), prune=frozenset({DEMO_POOL}))


def demo_settings() -> tuple[Path, int, int]:
    """VAR_DIR, emulator port and instance count (from the same variables scripts/run.sh uses)."""
    try:
        port = int(os.environ.get("SCANPOOL_EMULATOR_PORT") or 8834)
        instances = int(os.environ.get("SCANPOOL_EMULATOR_INSTANCES") or 2)
    except ValueError as exc:
        raise ValueError("SCANPOOL_EMULATOR_PORT and SCANPOOL_EMULATOR_INSTANCES must be whole numbers") from exc
    if not 1 <= instances <= 50 or not 1 <= port <= 65535 - instances:
        raise ValueError("SCANPOOL_EMULATOR_INSTANCES must be 1-50 and SCANPOOL_EMULATOR_PORT a free port")
    return Path(settings.VAR_DIR), port, instances
