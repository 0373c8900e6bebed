"""``manage.py create_api_token USERNAME [--read-only] [--name NAME]`` — print a new API token's key once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction

from tasks.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print its key (shown only now; only a hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--read-only", action="store_true", help="the token may only read")
        parser.add_argument("--name", default="", help="a label for the client (default: cli-<n>)")

    def handle(self, *args, **options) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            # A client's user gets only the permissions the client needs (docs/api.md): not a superuser.
            raise CommandError(f"no user {options['username']!r}: create it first in the admin (Users > Add user), "
                               "with only the permissions this client needs (docs/api.md, 'Clients and tokens')")
        if not user.is_active:
            raise CommandError(f"user {user.get_username()!r} is inactive: its tokens would not work")
        name = options["name"].strip() or f"cli-{ApiToken.objects.filter(user=user).count() + 1}"
        if len(name) > 100:
            raise CommandError("--name: at most 100 characters")
        try:
            with transaction.atomic():
                token, key = ApiToken.issue(user, name, read_only=options["read_only"])
        except IntegrityError:
            raise CommandError(f"user {user.get_username()!r} already has a token named {name!r}: "
                               "choose another --name") from None
        self.stderr.write(f"token {token.name!r} for {user.get_username()}"
                          f"{' (read-only)' if token.read_only else ''}; the key is shown only once:")
        self.stdout.write(key)
