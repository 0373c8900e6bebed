"""Encryption at rest for secrets (scanner API keys and passwords, scan credentials).

Keys come from ``SCANPOOL_SECRET_KEYS`` (comma-separated Fernet keys, newest first: the first one
encrypts, all of them decrypt, so keys rotate by prepending a new one and running
``manage.py rotate_secrets``). Without it, one key is derived from ``DJANGO_SECRET_KEY`` (development only).
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


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    raw = list(keys) or [_derived_key(secret_key).decode()]
    fernets = []
    for index, key in enumerate(raw):
        try:
            fernets.append(Fernet(key.encode() if isinstance(key, str) else key))
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"SCANPOOL_SECRET_KEYS entry #{index + 1} is not a valid Fernet key "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from exc
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
