"""Content negotiation: an unknown ``?format=`` is a 400 naming ``format`` and the formats the endpoint has, not
DRF's bare 404 (which reads as "no such task or path")."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class StrictFormatNegotiation(DefaultContentNegotiation):
    def filter_renderers(self, renderers, format):  # DRF's argument name
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            formats = ", ".join(sorted({renderer.format for renderer in renderers if renderer.format}))
            message = f"unknown format {format!r}: use one of {formats}, or leave it out"
            raise exceptions.ValidationError({"format": [message]}, code="invalid_choice")
        return matching
