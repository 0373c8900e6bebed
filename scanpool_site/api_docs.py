"""The OpenAPI schema (``/api/schema/``) and its Swagger UI (``/api/docs/``), drf-spectacular's views with the
API's error rule: an error under ``/api/`` is JSON (``{"error": …}``), not YAML labelled as an OpenAPI document
or an HTML page. A browser that is not logged in is sent from the Swagger UI to the login page instead."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.urls import reverse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import exceptions, renderers

from scanpool_site.query import StrictQueryMixin


class _JsonErrors:
    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = renderers.JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class SchemaView(_JsonErrors, StrictQueryMixin, SpectacularAPIView):
    query_parameters = {"get": ("lang", "version")}  # drf-spectacular's own (and format): a typo is a 400 here too


class DocsView(_JsonErrors, SpectacularSwaggerView):
    def handle_exception(self, exc):
        if isinstance(exc, exceptions.NotAuthenticated) and "HTTP_AUTHORIZATION" not in self.request.META:
            return redirect_to_login(self.request.get_full_path(), reverse("rest_framework:login"))
        return super().handle_exception(exc)
