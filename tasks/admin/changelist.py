"""A date drill-down that cannot be turned into a server error.

Django's date hierarchy (``?created_at__year=…&created_at__month=…``) reports a ``ValueError`` from building the
date as a bad lookup (the change list redirects to ``?e=1``) but lets ``OverflowError`` through: a hand-edited
URL with a huge year or month gave any staff user a 500 and the administrators an error mail."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest


class DateDrillDownChangeList(ChangeList):
    def get_filters(self, request: HttpRequest) -> Any:
        try:
            return super().get_filters(request)
        except OverflowError as exc:
            raise IncorrectLookupParameters(exc) from exc


class SafeDateHierarchyMixin:
    """For a ModelAdmin with ``date_hierarchy``: an out-of-range drill-down is a bad filter, as Django's others."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DateDrillDownChangeList
