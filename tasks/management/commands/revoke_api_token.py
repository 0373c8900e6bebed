"""``manage.py revoke_api_token NAME_OR_KEY_ID [--user USERNAME] [--cancel-waiting]`` — revoke an API token.

A rotation revokes only (the old token's queued scans still run); after a leak ``--cancel-waiting`` also cancels
its scans that have not started (:mod:`tasks.revocation`). Prints one line saying what was done and how many of
the token's scans are still active (``-v 0``: only when it revoked or cancelled something; ``-v 2``: also those
scans, one a line), never again as a log line; the key itself is never printed. Exit status 0 when the token is
revoked (also when it already was: running it again is safe), 1 with the reason on stderr otherwise. Output by
verbosity: :mod:`scanpool_site.ops_command`.
"""

from __future__ import annotations

import getpass
import re
from typing import Any

from django.core.management.base import CommandError, CommandParser

from scanpool_site.ops_command import OpsCommand
from tasks.models import ApiToken, ScanTask
from tasks.models.states import CANCELLABLE_STATUSES
from tasks.revocation import revoke_tokens, token_label

# A key id as the admin shows it (sp_1a2b3c4d_…), its 8 hex digits alone, or a whole key (only its id is used).
KEY_ID = re.compile(r"^(?:sp_)?([0-9a-f]{8})(?:_.*)?$", re.DOTALL)


def shown(argument: str) -> str:
    """The argument as it may be printed: something key-like only by its first characters (its id)."""
    return f"{argument[:11]}…" if argument.startswith("sp_") and len(argument) > 11 else repr(argument)


class Command(OpsCommand):
    help = ("Revoke an API token (by name, or by key id sp_<8 hex>_…). --cancel-waiting (after a leak) also cancels "
            "its scans that have not started; a rotation leaves them to run.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token", help="the token's name, or its key id (sp_<8 hex>_…, as the admin lists it)")
        parser.add_argument("--user", default="", help="the token's user, when several users have a token of that name")
        parser.add_argument("--cancel-waiting", action="store_true",
                            help="also cancel its scans pending approval or queued and not started (a leaked key)")

    def handle(self, *args: Any, **options: Any) -> None:
        token = self._find(options["token"], options["user"])
        actor = f"revoke_api_token ({getpass.getuser()})"
        result = revoke_tokens([token.pk], actor=actor, cancel_waiting=options["cancel_waiting"])
        line = f"{'revoked' if result.revoked else 'already revoked:'} API token {token_label(token)}"
        if options["cancel_waiting"]:
            line += f"; cancelled {result.cancelled} waiting scan(s)"
        if result.active:
            stages = ", ".join(f"{n} {stage.replace('_', ' ')}" for stage, n in result.still_active.items())
            line += (f"; {result.active} of its scans still active ({stages}): cancel them in the admin or with "
                     "POST /api/v1/scans/<id>/cancel/ if they must not run"
                     + ("" if options["cancel_waiting"] else ", or run again with --cancel-waiting after a leak"))
        else:
            line += "; none of its scans is pending approval, queued or running"
        if result.revoked or result.cancelled:
            self.done([line])
        else:
            self.summary(line)
        if self.verbosity >= 2:  # the scans still active, to cancel one by one
            active = ScanTask.objects.filter(api_token=token, status__in=CANCELLABLE_STATUSES).order_by("created_at")
            rows = active.values_list("pk", "status", "name")
            self.detail([f"  {pk}  {status}  {name}" for pk, status, name in rows])

    def _find(self, argument: str, username: str) -> ApiToken:
        argument = argument.strip()
        tokens = ApiToken.objects.select_related("user")
        if username:
            tokens = tokens.filter(user__username=username)
        match = KEY_ID.match(argument)
        if match and (token := tokens.filter(prefix=match.group(1)).first()) is not None:
            return token
        named = list(tokens.filter(name=argument)[:10]) if not argument.startswith("sp_") else []
        if len(named) == 1:
            return named[0]
        if named:
            users = ", ".join(sorted(t.user.get_username() for t in named))
            raise CommandError(f"several API tokens are named {argument!r} (users: {users}): give --user USERNAME "
                               "or the token's key id (sp_<8 hex>_…, in the admin's list of API tokens)")
        of_user = f" of user {username!r}" if username else ""
        raise CommandError(f"no API token{of_user} named or with key id {shown(argument)}: the admin lists them "
                           "(Tasks > API tokens), with their key ids")
