"""Who may make which API token (the admin's token form asks; docs/security.md)."""

from __future__ import annotations

from typing import Any


def token_grant_problem(actor: Any, user: Any) -> str | None:
    """Why ``actor`` may not make a token that acts as ``user``, or make one of ``user``'s read-only tokens
    writable; None when they may.

    A token carries its user's permissions and its submissions are that user's, so a key for another user hands
    out that user's powers: a superuser's, a second, policy-free key of a policy-bound client, or a second
    identity to approve one's own scans with (four eyes). Only superusers (and operators with a shell:
    ``manage.py create_api_token``) make keys for other users; everyone else makes their own."""
    if actor.is_superuser or actor.pk == user.pk:
        return None
    return (f"only a superuser may make a token that acts as {user.get_username()!r}, or make one of its tokens "
            "writable (a token carries its user's permissions and submits in its name): make a token for "
            "yourself, or ask a superuser")
