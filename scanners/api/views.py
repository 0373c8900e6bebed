"""``/api/v1/scanners/``: read-only scanner data (permission: scanners.view_scanner); ``?pool=NAME`` lists the
scanners of one pool."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, viewsets

from scanners.api.serializers import ScannerSerializer
from scanners.models import Scanner
from scanpool_site.query import StrictQueryMixin


@extend_schema_view(
    list=extend_schema(summary="List scanners", parameters=[
        OpenApiParameter("pool", str, description="only the scanners of this pool (by name)")]),
    retrieve=extend_schema(summary="One scanner"),
)
class ScannerViewSet(StrictQueryMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Scanner.objects.select_related("pool").defer("access_key", "secret_key", "password", "license_info")
    serializer_class = ScannerSerializer
    lookup_field = "name"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    pagination_class = None
    query_parameters = {"list": ("pool",), "retrieve": ()}

    def get_object(self) -> Scanner:
        try:
            return self.get_queryset().get(name=self.kwargs["name"])
        except Scanner.DoesNotExist:
            missing = exceptions.NotFound(f"no scanner named {self.kwargs['name']!r}: GET /api/v1/scanners/ lists "
                                          "them")
            missing.field = "name"  # like the pool's 404 (the error shape of tasks/api/errors.py)
            raise missing from None

    def get_queryset(self):
        queryset = super().get_queryset()
        pool = self.request.query_params.get("pool") if self.action == "list" else None
        return queryset.filter(pool__name=pool) if pool else queryset
