"""Encryption at rest for secrets (scanner API keys and passwords, scan credentials).

Keys come from ``SCANPOOL_SECRET_KEYS`` (comma-separated Fernet keys, newest first: the first one
encrypts, all of them decrypt, so keys rotate by prepending a new one and running
``manage.py rotate_secrets``). A development install without it uses a key generated into ``var/``
(see :mod:`scanpool_site.settings`).

Older releases derived the key from ``DJANGO_SECRET_KEY`` (or from the public development key) when
``SCANPOOL_SECRET_KEYS`` was unset. Those derived keys stay in the ring as *decryption-only* keys, after the
configured ones, so existing installs keep reading their secrets; ``rotate_secrets`` re-encrypts them with
the configured key.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "fernet:"


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _derived_key(secret_key: str) -> bytes:
    digest = hashlib.sha256(("scanpool-secrets:" + secret_key).encode()).digest()
    return base64.urlsafe_b64encode(digest)


# The fixed development SECRET_KEY of releases before keys were generated into var/: installs that ran with
# it encrypted their secrets with a key derived from it.
LEGACY_DEV_SECRET_KEY = "django-insecure-scanpool-development-key-do-not-use-in-production"


def legacy_keys(secret_key: str) -> list[str]:
    """Decryption-only keys of older releases: derived from ``DJANGO_SECRET_KEY`` and from the old dev key."""
    return [_derived_key(secret_key).decode(), _derived_key(LEGACY_DEV_SECRET_KEY).decode()]


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    configured = list(keys) or [_derived_key(secret_key).decode()]
    fernets = []
    for index, key in enumerate(configured):
        try:
            fernets.append(Fernet(key.encode() if isinstance(key, str) else key))
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"SCANPOOL_SECRET_KEYS entry #{index + 1} is not a valid Fernet key "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from exc
    # After the configured keys (MultiFernet encrypts with the first only): never used to encrypt.
    for key in dict.fromkeys(legacy_keys(secret_key)):
        if key not in configured:
            fernets.append(Fernet(key.encode()))
    return MultiFernet(fernets)


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.SCANPOOL_SECRET_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return PREFIX + fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    if not token.startswith(PREFIX):
        raise SecretDecryptionError("stored value is not an encrypted secret")
    try:
        return fernet().decrypt(token[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "cannot decrypt a stored secret: SCANPOOL_SECRET_KEYS does not hold the key it was written with"
        ) from exc


def rotate(token: str) -> str:
    """Re-encrypt ``token`` with the newest key."""
    return PREFIX + fernet().rotate(token[len(PREFIX) :].encode("ascii")).decode("ascii")
