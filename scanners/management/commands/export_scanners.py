"""manage.py export_scanners [--output FILE] — the pools and scanners as load_scanners YAML, without secrets."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from scanners.config import export_yaml


class Command(BaseCommand):
    help = (
        "Print (or write) every pool and scanner in the load_scanners YAML format; secrets become ${VAR} placeholders."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", help="write to this file instead of standard output")

    def handle(self, *args: object, **options: object) -> None:
        text = export_yaml()
        output = options.get("output")
        if output:
            Path(str(output)).write_text(text, encoding="utf-8")
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")
