"""Case-insensitive text lookups that answer the same on SQLite as on PostgreSQL, for any letter.

Django's ``icontains``/``iexact`` are ``UPPER(col) LIKE UPPER(%s)`` on PostgreSQL (every letter folds) but a plain
``LIKE`` on SQLite, whose case folding knows ASCII letters only: ``q=échec`` found "Échec de connexion" on
PostgreSQL and nothing on SQLite. On SQLite a search text with a non-ASCII character is matched with ``GLOB``
(case-sensitive) and each letter as a class of its cases (``[éÉ]chec``); ASCII texts keep SQLite's ``LIKE``.
"""

from __future__ import annotations

from django.db.models import CharField, TextField
from django.db.models.lookups import IContains, IExact

_GLOB_SPECIAL = {"*": "[*]", "?": "[?]", "[": "[[]"}


def _glob_char(char: str) -> str:
    cases = sorted({c for c in (char, char.lower(), char.upper()) if len(c) == 1})
    if len(cases) > 1:
        return "[" + "".join(cases) + "]"
    return _GLOB_SPECIAL.get(char, char)


def glob_pattern(text: str, *, contains: bool) -> str:
    """A SQLite GLOB pattern matching ``text`` in any letter case (anywhere in the value when ``contains``)."""
    body = "".join(_glob_char(c) for c in text)
    return f"*{body}*" if contains else body


class _UnicodeCaseMixin:
    contains = True

    def as_sqlite(self, compiler, connection):
        if not isinstance(self.rhs, str) or self.rhs.isascii():
            return super().as_sql(compiler, connection)  # type: ignore[misc]
        lhs_sql, params = self.process_lhs(compiler, connection)  # type: ignore[attr-defined]
        return f"{lhs_sql} GLOB %s", [*params, glob_pattern(self.rhs, contains=self.contains)]


class UnicodeIContains(_UnicodeCaseMixin, IContains):
    pass  # lookup_name stays "icontains": the backends' operators and casts are keyed by it


class UnicodeIExact(_UnicodeCaseMixin, IExact):
    contains = False


for _field in (CharField, TextField):
    _field.register_lookup(UnicodeIContains, "uicontains")
    _field.register_lookup(UnicodeIExact, "uiexact")
