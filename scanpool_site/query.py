"""Strict query strings for the API: a parameter an endpoint does not know (a typo must not silently list
everything), one given twice (the last would silently win), a value with a NUL character (PostgreSQL refuses it in
a lookup) or an empty typed value is a 400 naming it.

Here, at the bottom of the app stack, so the scanner endpoints (``scanners.api``) use the same rule as the scan and
pool endpoints (``tasks.api``)."""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework import exceptions
from rest_framework.request import Request


def _refuse(name: str, message: str, code: str = "invalid") -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message]}, code=code)


def check_query(request: Request, *, allowed: Iterable[str] | None, typed: Iterable[str] = ()) -> None:
    """Refuse query parameters the operation does not know, given more than once, and empty values of the
    ``typed`` ones (a number, date, or choice: the schema has no empty value for them). ``format`` (DRF's format
    override) is always allowed; ``allowed=None`` leaves the names to the caller."""
    params = request.query_params
    if allowed is not None:
        allowed = set(allowed)
        unknown = sorted(set(params) - {*allowed, "format"})
        if unknown:
            fix = (f"use {', '.join(sorted(allowed))}" if allowed
                   else "this endpoint takes no query parameter but format: send its input in the body")
            raise _refuse(unknown[0], f"unknown query parameter {unknown[0]!r}: {fix}")
    for name, values in params.lists():  # the last one would silently win
        if len(values) > 1:
            raise _refuse(name, f"is given {len(values)} times: give it once (several values of a filter go "
                          "comma-separated in one)")
        if any("\x00" in value for value in values):  # PostgreSQL refuses NUL in a text lookup: a 500 otherwise
            raise _refuse(name, "contains a NUL character: remove it", code="null_characters_not_allowed")
    for name in typed:
        if params.get(name) == "":
            raise _refuse(name, "is empty: give a value or leave the parameter out")


class StrictQueryMixin:
    """For an API view: ``query_parameters`` maps an action (or the HTTP method, lower case, for a plain view) to
    the query parameters it takes; any other is refused before the view runs. Actions not listed check nothing
    here (the view checks its own)."""

    query_parameters: dict[str, Iterable[str]] = {}

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        action = getattr(self, "action", None) or request.method.lower()
        if action in self.query_parameters:
            check_query(request, allowed=self.query_parameters[action])
