"""manage.py load_client_policies FILE.yaml [--dry-run] — client policies from YAML (docs/security.md)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scanners.config.source import ConfigError
from tasks.policies.loader import read_policies


class Command(BaseCommand):
    help = ("Create or replace the client policies a YAML file lists ('clients:'), in one transaction; "
            "--dry-run prints the plan and changes nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="YAML file with a top-level 'clients:' list")
        parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    def handle(self, *args: object, **options: object) -> None:
        path, dry_run = str(options["file"]), bool(options["dry_run"])
        try:
            plan = read_policies(path, dry_run=dry_run)
        except ConfigError as exc:
            raise CommandError(f"{path}: nothing was changed:\n{exc.render()}") from exc
        for line in plan.lines():
            self.stdout.write(("would " if dry_run else "") + line)
        verb = "dry run, nothing changed" if dry_run else "applied"
        self.stdout.write(self.style.SUCCESS(
            f"{path}: {len(plan.created)} created, {len(plan.updated)} updated ({verb})"))
