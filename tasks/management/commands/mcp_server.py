"""``manage.py mcp_server [--transport stdio|http] [--host H] [--port P]``: scanpool's MCP server.

Thin: the server (tasks.mcp) is a client of the REST API configured by SCANPOOL_API_URL and
SCANPOOL_API_TOKEN, exactly like the ``scanpool-mcp`` console script; see docs/mcp.md.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.mcp.client import ConfigError
from tasks.mcp.server import add_arguments, configure_logging, serve


class Command(BaseCommand):
    help = "Run scanpool's MCP server (stdio or streamable HTTP), a client of the REST API (docs/mcp.md)."
    # It uses neither the database nor Redis: the project's system checks (which may) are not its business.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(settings.LOG_LEVEL)
        try:
            serve(options["transport"], options["host"], options["port"])
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
