"""Re-encrypt every stored secret with the newest key of ``SCANPOOL_SECRET_KEYS`` (key rotation).

Rotation: prepend a new key to ``SCANPOOL_SECRET_KEYS`` (old keys stay, so everything still
decrypts), run ``manage.py rotate_secrets``, then drop the old keys.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.db import connection, transaction

from scanpool_site import crypto
from scanpool_site.fields import EncryptedJSONField, EncryptedTextField


def encrypted_columns() -> list[tuple[type, str]]:
    """Every (model, column) holding an encrypted secret, across all installed apps."""
    return [
        (model, field.column)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField | EncryptedJSONField)
    ]


def rotate_secrets() -> dict[str, int]:
    """Re-encrypt all secrets in one transaction; returns ``{"app.Model.column": rows rewritten}``.

    Raises :class:`~scanpool_site.crypto.SecretDecryptionError` (and changes nothing) when a value
    cannot be decrypted with any configured key.
    """
    counts: dict[str, int] = {}
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        for model, column in encrypted_columns():
            table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
            cursor.execute(f"SELECT {pk}, {quote(column)} FROM {table} WHERE {quote(column)} <> ''")  # noqa: S608
            rows = [(key, value) for key, value in cursor.fetchall() if value]
            rewritten = 0
            for key, token in rows:
                try:
                    new_token = crypto.rotate(token)
                except (InvalidToken, ValueError) as exc:
                    raise crypto.SecretDecryptionError(
                        f"{model._meta.label}.{column} of row {key} cannot be decrypted with any key in "
                        "SCANPOOL_SECRET_KEYS: add back the key it was written with"
                    ) from exc
                # Only if the row still holds what was read: a task's credentials erased by a worker, or a
                # password typed in the admin, since the SELECT is newer (and already under the newest key).
                cursor.execute(
                    f"UPDATE {table} SET {quote(column)} = %s WHERE {pk} = %s AND {quote(column)} = %s",  # noqa: S608
                    [new_token, key, token],
                )
                rewritten += cursor.rowcount
            counts[f"{model._meta.label}.{column}"] = rewritten
    return counts
