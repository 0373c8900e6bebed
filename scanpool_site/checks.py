"""System checks for scanpool's own settings (``manage.py check``, ``check --deploy``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from scanpool_site import crypto

GENERATE_KEY = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


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
    if settings.SCANPOOL_SECRET_KEYS:
        return []
    return [
        Warning(
            "SCANPOOL_SECRET_KEYS is not set: scanner and scan credentials are encrypted with a key derived "
            "from DJANGO_SECRET_KEY, so changing DJANGO_SECRET_KEY would make them unreadable.",
            hint=f"Set SCANPOOL_SECRET_KEYS to a key made with: {GENERATE_KEY} (see docs/configuration.md).",
            id="scanpool.W001",
        )
    ]
