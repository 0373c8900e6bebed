"""System checks for scanpool's own settings (``manage.py check``, ``check --deploy``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from scanpool_site import crypto, redis_url

GENERATE_KEY = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
GENERATE_PASSWORD = "python3 -c 'import secrets; print(secrets.token_hex(32))'"


@register(Tags.security)
def check_secret_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every SCANPOOL_SECRET_KEYS entry must be a Fernet key (else nothing can be encrypted)."""
    try:
        crypto.fernet()
    except ImproperlyConfigured as exc:
        hint = "SCANPOOL_SECRET_KEYS holds comma-separated Fernet keys, newest first."
        return [Error(str(exc), hint=hint, id="scanpool.E001")]
    return []


@register(Tags.security, deploy=True)
def check_secret_keys_set_in_production(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Production keys come from the environment, not from the development files generated in var/."""
    generated = list(getattr(settings, "SCANPOOL_GENERATED_SECRETS", []))
    if not settings.SCANPOOL_SECRET_KEYS and "SCANPOOL_SECRET_KEYS" not in generated:
        generated.append("SCANPOOL_SECRET_KEYS")
    if not generated:
        return []
    return [
        Warning(
            f"{' and '.join(generated)} not set: this install uses development keys generated in "
            f"{settings.VAR_DIR} (scanner and scan credentials are encrypted with them).",
            hint=f"Set SCANPOOL_SECRET_KEYS to a key made with: {GENERATE_KEY} and DJANGO_SECRET_KEY "
            f"(docs/configuration.md); keep the old key after the new one and run `manage.py rotate_secrets`.",
            id="scanpool.W001",
        )
    ]


@register(Tags.security, deploy=True)
def check_redis_password(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Whoever can write to Redis runs code in the workers: production Redis needs a password."""
    if redis_url.has_password(settings.REDIS_URL):
        return []
    return [
        Error(
            "REDIS_URL has no password: anybody who can reach Redis can queue jobs for the workers, read job "
            "data and delete queued work.",
            hint=f"Start Redis with `requirepass` (or an ACL user) and put it in REDIS_URL: "
            f"redis://:PASSWORD@host:6379/0 (make one with: {GENERATE_PASSWORD}). See docs/security.md.",
            id="scanpool.E002",
        )
    ]
