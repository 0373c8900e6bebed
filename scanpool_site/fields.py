"""Model fields that keep secrets encrypted in the database column."""

from __future__ import annotations

import json
from typing import Any

from django.db import models

from scanpool_site import crypto


class Secret(str):
    """A decrypted secret whose repr never shows the value (safe in tracebacks and logs)."""

    def __repr__(self) -> str:
        return "Secret('********')"


class EncryptedTextField(models.TextField):
    """Stores ``fernet:<token>``; Python side is a :class:`Secret` string ('' when unset)."""

    description = "Text encrypted at rest"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return value
        return Secret(crypto.decrypt(value))

    def to_python(self, value: Any) -> Any:
        if value is None or value == "" or isinstance(value, Secret):
            return value
        if isinstance(value, str) and value.startswith(crypto.PREFIX):
            return Secret(crypto.decrypt(value))
        return Secret(str(value))

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return crypto.encrypt(str(value))

    def value_to_string(self, obj: Any) -> str:
        # dumpdata writes the ciphertext (loaddata decrypts it with the same keys): no plaintext in dumps.
        value = self.value_from_object(obj)
        return crypto.encrypt(str(value)) if value else ""


class EncryptedJSONField(models.TextField):
    """A JSON document (e.g. scan credentials) encrypted as a whole; ``None`` when unset."""

    description = "JSON encrypted at rest"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return None
        return json.loads(crypto.decrypt(value))

    def to_python(self, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            if value.startswith(crypto.PREFIX):
                return json.loads(crypto.decrypt(value))
            return json.loads(value)
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value is None or value == "" or value == {}:
            return None
        return crypto.encrypt(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj: Any) -> str:
        # dumpdata writes the ciphertext (loaddata decrypts it with the same keys): no plaintext in dumps.
        value = self.value_from_object(obj)
        return crypto.encrypt(json.dumps(value, sort_keys=True)) if value else ""
