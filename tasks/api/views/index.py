"""``GET /api/v1/``: where everything is."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from scanpool_site.query import StrictQueryMixin


class IndexView(StrictQueryMixin, APIView):
    permission_classes = [permissions.IsAuthenticated]
    query_parameters = {"get": ()}

    @extend_schema(summary="Index of the API", responses={200: inline_serializer("ApiIndex", fields={
        name: serializers.URLField() for name in ("scans", "pools", "scanners", "validate", "schema", "docs")})})
    def get(self, request: Request) -> Response:
        def url(name: str) -> str:
            return reverse(name, request=request)

        return Response({
            "scans": url("api:scan-list"), "pools": url("api:pool-list"), "scanners": url("api:scanner-list"),
            "validate": url("api:validate"), "schema": url("api-schema"), "docs": url("api-docs"),
        })
