"""``/api/v1/scanners/``: read-only scanner data (permission: scanners.view_scanner)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets

from scanners.api.serializers import ScannerSerializer
from scanners.models import Scanner


@extend_schema_view(list=extend_schema(summary="List scanners"), retrieve=extend_schema(summary="One scanner"))
class ScannerViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Scanner.objects.select_related("pool").defer("access_key", "secret_key", "password", "license_info")
    serializer_class = ScannerSerializer
    lookup_field = "name"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    pagination_class = None
