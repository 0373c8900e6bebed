"""The OpenAPI schema's error answers: every operation documents the errors it can give, with their one shape.

drf-spectacular documents only what a view declares, so an operation without ``responses=`` showed 200 alone,
and declared errors had a description but no body. A client generated from the schema (or a contract test)
then met undocumented 400/404/429 answers. :class:`ScanpoolAutoSchema` (``DEFAULT_SCHEMA_CLASS``) adds to each
operation the statuses every API request can get, and those its parameters, path and body make possible,
each with the :class:`ErrorSerializer` body (``{"error": {"code", "message", "field"?, "details"?}}``, written by
tasks/api/errors.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from tasks.api.fields import StrictSerializer


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="machine-readable, e.g. invalid, not_found, throttled, out_of_scope")
    message = serializers.CharField(help_text="what is wrong and how to fix it (names the field when there is one)")
    field = serializers.CharField(required=False, help_text="the body field or query parameter at fault")
    details = serializers.JSONField(required=False, help_text="more: other invalid fields, retry_after, reason…")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ALWAYS = {
    "401": "no token, or a bad or revoked one",
    "403": "the client lacks the permission (or its policy refuses the request: details say why)",
    "406": "no representation matches the Accept header",
    "429": "too many requests from this client, a full pool or a used-up budget (Retry-After)",
}
WITH_INPUT = {"400": "invalid request: error.field names the body field or query parameter, and the message the fix"}
WITH_PATH = {"404": "no such object (the path names none), or no such page (a cursor the list did not give)"}
NO_NUL = "^[^\\u0000]*$"
WITH_BODY = {"415": "unsupported Content-Type for the body"}


class ScanpoolAutoSchema(AutoSchema):
    def _error_statuses(self) -> dict[str, str]:
        statuses = dict(ALWAYS)
        has_body = self.method in ("POST", "PUT", "PATCH")
        if has_body or any(p["in"] == "query" for p in self._get_parameters()):
            statuses.update(WITH_INPUT)
        if "{" in self.path or self._get_paginator() is not None:  # a cursor that names no page
            statuses.update(WITH_PATH)
        if has_body:
            statuses.update(WITH_BODY)
        return statuses

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False  # an unknown field is refused (tasks/api/fields.py)
        if direction == "request":
            for name, pattern in getattr(serializer, "schema_patterns", {}).items():
                schema["properties"][name]["pattern"] = pattern
            for field in schema.get("properties", {}).values():
                # DRF's CharField refuses a NUL character in any text field: the schema says so.
                if field.get("type") == "string" and not {"format", "enum", "pattern"} & set(field):
                    field["pattern"] = NO_NUL
        return schema

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status, description in self._error_statuses().items():
            responses.setdefault(status, {"description": description})
        for status, response in responses.items():
            if status.startswith(("4", "5")) and "content" not in response:
                described = OpenApiResponse(ErrorSerializer, description=response.get("description", ""))
                responses[status] = {**self._get_response_for_code(described, status, ["application/json"],
                                                                   direction), **{k: v for k, v in response.items()
                                                                                  if k == "headers"}}
        return responses
