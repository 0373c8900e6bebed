"""Strict request fields: a wrong JSON type is an error naming the field, never silently converted
(DRF's CharField would turn 123 into "123"), and unknown body fields are refused."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid_type": "must be a string, not {kind}"}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)  # the service trims and says what is wrong
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_type", kind=type(data).__name__)
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid_type": "must be a whole number, not {kind}"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid_type", kind=type(data).__name__)
        return super().to_internal_value(data)


@extend_schema_field({
    "oneOf": [
        {"type": "string", "description": "entries separated by commas, spaces or new lines"},
        {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
    ],
    "example": ["192.0.2.10", "192.0.2.0/28", "host.example.com"],
})
class TargetsField(serializers.Field):
    default_error_messages = {
        "invalid_type": "must be a string or a list of strings (addresses, CIDRs, ranges, host names)"}

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(isinstance(item, str) for item in data):
            return data
        self.fail("invalid_type")

    def to_representation(self, value):
        return value


# What tasks.submission_rules.clean_text accepts, as schema patterns (JSON Schema / ECMA regex): no control
# character but tab, CR and LF; "required" text also has a character that is not a space (it is trimmed).
_CONTROL = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f"
TEXT_PATTERN = f"^[^{_CONTROL}]*$"
REQUIRED_TEXT_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}\\s][^{_CONTROL}]*$"
NOT_BLANK_PATTERN = "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"  # DRF's CharField refuses NUL; a blank is refused


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo must not silently become a default).

    A request serializer: made with ``data`` only, it shares one set of bound fields per class. DRF builds,
    deep-copies and binds every field for each instance (a tenth of a submission's own time); a field keeps no
    state of its own while it validates (it reads its settings, and its root's ``partial`` and ``context``: those of
    a prototype made the same way, with no instance, no context, not partial). One made with an instance, a context
    (the browsable API's form) or ``partial``, or nested in another serializer (whose root it then reads), has fields
    of its own, as DRF makes them."""

    @property
    def fields(self):
        own = self.__dict__.get("_own_fields")
        if own is not None:
            return own
        if self.instance is not None or self._context or self.partial or getattr(self, "parent", None) is not None:
            own = self.__dict__["_own_fields"] = serializers.Serializer.fields.func(self)
            return own
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            prototype = cls(data={})
            prototype.__dict__["_own_fields"] = shared = serializers.Serializer.fields.func(prototype)
            cls._shared_fields = shared
        return shared

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": [f"expected a JSON object, not {type(data).__name__}"]}, code="invalid")
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            allowed = ", ".join(sorted(self.fields))
            raise serializers.ValidationError(
                {unknown[0]: [f"unknown field {unknown[0]!r}; allowed fields: {allowed}"]}, code="unknown_field")
        return super().to_internal_value(data)


ANY_JSON = OpenApiTypes.ANY
