"""manage.py load_scanners FILE.yaml [--dry-run] [--prune] — declarative pools and scanners (docs/scanners-yaml.md)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scanners.config import ConfigError, load_config, read_config
from scanners.config.loader import UNCHANGED


class Command(BaseCommand):
    help = (
        "Create or update pools and scanners from a YAML file, in one transaction. "
        "--prune disables (never deletes) pools and scanners the file no longer lists; "
        "--dry-run prints the plan and changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="YAML file (schema: docs/scanners-yaml.md)")
        parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
        parser.add_argument("--prune", action="store_true", help="disable pools/scanners the file does not list")

    def handle(self, *args: object, **options: object) -> None:
        path = str(options["file"])
        dry_run = bool(options["dry_run"])
        try:
            config = read_config(path)
            plan = load_config(config, prune=bool(options["prune"]), dry_run=dry_run)
        except ConfigError as exc:
            raise CommandError(f"{path}: nothing was changed:\n{exc.render()}") from exc
        for warning in plan.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        if config.legacy:
            self.stdout.write(f"{path}: older '<pool>: [scanners]' format read (instance_id → scanner name)")
        verbose = int(options.get("verbosity", 1)) >= 2
        for change in plan.changes:
            if change.action != UNCHANGED or verbose:
                would = dry_run and change.action != UNCHANGED  # "unchanged" stays true of a dry run
                self.stdout.write(("would " if would else "") + change.describe())
        verb = "dry run, nothing changed" if dry_run else "applied"
        self.stdout.write(self.style.SUCCESS(f"{path}: {plan.summary()} ({verb})"))
