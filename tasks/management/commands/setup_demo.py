"""manage.py setup_demo — the demo superuser, its API token and the demo pool (run by `make run`; idempotent)."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from scanners.config import ConfigError
from tasks.demo import DEMO_POOL, demo_settings, ensure_demo_admin, load_demo_pool


class Command(BaseCommand):
    help = (
        "Create the 'admin' superuser (password from SCANPOOL_DEMO_PASSWORD, or generated once into "
        "var/demo-admin-password), its API token, and the 'demo' pool on the Nessus emulator. Safe to re-run."
    )

    def handle(self, *args: object, **options: object) -> None:
        try:
            var_dir, port, instances = demo_settings()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        admin = ensure_demo_admin(var_dir, os.environ.get("SCANPOOL_DEMO_PASSWORD") or None)
        try:
            path, plan = load_demo_pool(var_dir, port, instances)
        except ConfigError as exc:
            raise CommandError(exc.render()) from exc

        web = os.environ.get("SCANPOOL_WEB_ADDR", "127.0.0.1:8000")
        base = f"http://{web}"
        password = admin.password if admin.password is not None else "(unchanged)"
        lines = [
            "",
            "=" * 78,
            "  scanpool demo",
            f"  admin (control room)  {base}/admin/",
            f"      login             {admin.username} / {password}",
            f"      password          {admin.password_source}",
            f"  API token             {admin.token}",
            f"      use it as         Authorization: Token {admin.token}",
            f"  live dashboard        {base}/ops/dashboard/",
            f"  queues and workers    {base}/ops/queues/",
            f"  metrics               {base}/metrics",
            f"  health / readiness    {base}/healthz  {base}/readyz",
            f"  demo pool             '{DEMO_POOL}': {instances} emulator scanner(s) from https://127.0.0.1:{port}"
            f"  ({plan.summary()}; config in {path})",
            "=" * 78,
            "",
        ]
        self.stdout.write("\n".join(lines))
