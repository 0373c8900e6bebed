"""Request and response shapes of the scan endpoints. Requests are checked for shape and types only;
every rule (scope, pool, scanner, credentials, limits) is the submission service's."""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse
from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.fields import get_attribute

from tasks.api.fields import (
    NOT_BLANK_PATTERN,
    REQUIRED_TEXT_PATTERN,
    TEXT_PATTERN,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    TargetsField,
)
from tasks.capacity import cached_estimated_wait
from tasks.models import ScanTask, ScanType, TaskEvent
from tasks.policies.approval import approvers
from tasks.refetch import advice as refetch_advice


class PrebuiltFields:
    """A ModelSerializer mixin: build the fields from the model once per class, then copy them (DRF rebuilds
    them by model introspection at every instantiation, a large part of a status read's time).

    The copy is shallow for plain fields: ``bind()`` gives each copy its own name, parent and source, and
    nothing else of a field changes while it serialises. A deep copy re-runs every field's ``__init__``
    (DRF's ``Field.__deepcopy__``), which cost ~1 ms of each status read. Nested serializers keep the deep
    copy: they cache bound child fields of their own."""

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        prototype = cls.__dict__.get("_prebuilt_fields")
        if prototype is None:
            prototype = super().get_fields()
            cls._prebuilt_fields = prototype
        return {name: copy.deepcopy(field) if isinstance(field, serializers.BaseSerializer) else copy.copy(field)
                for name, field in prototype.items()}


class CredentialsSerializer(StrictSerializer):
    username = StrictCharField(required=False, max_length=150)
    password = StrictCharField(required=False, write_only=True, style={"input_type": "password"})
    private_key = StrictCharField(required=False, write_only=True, help_text="PEM private key (-----BEGIN …)")
    elevate_privileges_with = StrictCharField(required=False, help_text="sudo, su, su+sudo, pbrun or dzdo")
    escalation_account = StrictCharField(required=False, max_length=150)
    escalation_password = StrictCharField(required=False, write_only=True, style={"input_type": "password"})


@extend_schema_serializer(examples=[
    OpenApiExample("untrusted scan", request_only=True, value={
        "name": "weekly dmz", "targets": ["192.0.2.10", "192.0.2.0/28"], "scan_type": "untrusted",
        "scanner_pool": "demo", "idempotency_key": "weekly-dmz-2026-12-01"}),
    OpenApiExample("authenticated scan with sudo", request_only=True, value={
        "name": "patch audit", "targets": "192.0.2.20, 192.0.2.21", "scan_type": "authenticated_privileged",
        "scanner_pool": "demo", "credentials": {
            "username": "scan-user", "password": "<the SSH password>", "elevate_privileges_with": "sudo",
            "escalation_password": "<the sudo password>"}}),
])
class ScanCreateSerializer(StrictSerializer):
    # For the schema (tasks/api/schema.py): what the submission service accepts in these text fields.
    schema_patterns = {"name": REQUIRED_TEXT_PATTERN, "description": TEXT_PATTERN, "scanner_pool": TEXT_PATTERN,
                       "scanner_instance": TEXT_PATTERN, "idempotency_key": REQUIRED_TEXT_PATTERN}
    name = StrictCharField(max_length=200)
    targets = TargetsField()
    description = StrictCharField(required=False, max_length=10_000)
    scan_type = serializers.ChoiceField(choices=ScanType.choices, required=False, default=ScanType.UNTRUSTED)
    scanner_pool = StrictCharField(required=False, max_length=64,
                                   help_text="pool name; default: SCANPOOL_DEFAULT_POOL, or the only pool")
    scanner_instance = StrictCharField(required=False, allow_null=True, max_length=64,
                                       help_text="pin one scanner of the pool")
    credentials = CredentialsSerializer(required=False, allow_null=True, write_only=True)
    timeout_seconds = StrictIntegerField(required=False, allow_null=True)
    idempotency_key = StrictCharField(required=False, allow_null=True, max_length=200,
                                      help_text="or the Idempotency-Key header")


class EventSerializer(PrebuiltFields, serializers.ModelSerializer):
    class Meta:
        model = TaskEvent
        fields = ["created_at", "kind", "from_status", "to_status", "message", "actor"]


_EVENT_TIME = serializers.DateTimeField()  # formats like EventSerializer's created_at (settings' format, zone)


class LinksField(serializers.Field):
    def __init__(self, **kwargs):
        kwargs["source"] = "*"
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    # The other links are the status URL plus these (tasks/api/urls.py; tests/test_api_scans.py checks them
    # against reverse()): one status URL per task, made from a template (one reverse() per URL configuration)
    # and the request's scheme and host (worked out once per response), which a page of 50 tasks felt.
    SUFFIXES = {"results": "results/", "hosts": "hosts/", "raw": "results.nessus"}
    _PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
    _templates: dict[tuple[str, str], str] = {}

    def to_representation(self, task: ScanTask) -> dict[str, str]:
        return self.links(task, self.context)

    @classmethod
    def links(cls, task: ScanTask, context: dict[str, Any]) -> dict[str, str]:
        key = (get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
        template = cls._templates.get(key)
        if template is None:
            template = cls._templates[key] = reverse("api:scan-detail", args=[cls._PLACEHOLDER])
        status = template.replace(cls._PLACEHOLDER, str(task.pk))
        request = context.get("request")
        if request is not None:
            base = context.get("_base_uri")
            if base is None:  # scheme and host, as build_absolute_uri() gives them for any path
                base = context["_base_uri"] = request.build_absolute_uri("/")[:-1]
            status = base + status
        return {"status": status, **{name: status + suffix for name, suffix in cls.SUFFIXES.items()}}


extend_schema_field({"type": "object", "properties": {k: {"type": "string", "format": "uri"} for k in
                                                       ("status", "results", "hosts", "raw")}})(LinksField)


# Field classes whose to_representation() reads nothing but its argument and its own settings (no parent, no
# context): one bound prototype of each can format every instance.
_PLAIN_FIELDS = (serializers.CharField, serializers.IntegerField, serializers.FloatField, serializers.BooleanField,
                 serializers.ChoiceField, serializers.DateTimeField, serializers.JSONField, serializers.UUIDField)


class PlannedRepresentation:
    """A serializer mixin for documents read often (a status read, a submit's answer, a page of the list).

    DRF's ``to_representation`` copies and binds every field of the serializer for each instance (a serializer
    per response) and then walks them; for the ~40 fields of a scan that was a fifth of a submit's own time. The
    plan is made once per class from its bound fields: plain fields keep DRF's own formatting (the bound
    prototype's ``to_representation``), method fields call the same ``get_<name>`` methods, links the same
    builder. ``generic_representation`` is DRF's path, kept so a test can compare both on every kind of task."""

    def _plan(self) -> list[tuple[str, str, Any]]:
        cls = type(self)
        plan = cls.__dict__.get("_representation_plan")
        if plan is None:
            plan = []
            for name, field in cls(context={}).fields.items():
                if field.write_only:
                    continue
                if isinstance(field, serializers.SerializerMethodField):
                    plan.append((name, "method", field.method_name))
                elif isinstance(field, LinksField):
                    plan.append((name, "links", None))
                elif isinstance(field, _PLAIN_FIELDS) and field.source != "*":
                    plan.append((name, "plain", (field.source_attrs, field.to_representation)))
                else:
                    raise TypeError(f"{cls.__name__}.{name}: {type(field).__name__} has no planned representation")
            cls._representation_plan = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        document = {}
        for name, kind, how in self._plan():
            if kind == "plain":
                value = get_attribute(instance, how[0])
                document[name] = None if value is None else how[1](value)
            elif kind == "method":
                document[name] = getattr(self, how)(instance)
            else:
                document[name] = LinksField.links(instance, self.context)
        return document

    def generic_representation(self, instance: Any) -> dict[str, Any]:
        return super().to_representation(instance)


class ScanListSerializer(PlannedRepresentation, PrebuiltFields, serializers.ModelSerializer):
    task_id = serializers.UUIDField(source="id", read_only=True)
    scanner_pool = serializers.CharField(source="pool.name", read_only=True)
    scanner_instance = serializers.SerializerMethodField()
    authentication_status = serializers.CharField(source="auth_status", read_only=True)
    links = LinksField()

    class Meta:
        model = ScanTask
        fields = ["task_id", "name", "status", "progress", "scan_type", "targets", "scanner_pool", "scanner_instance",
                  "authentication_status", "error_kind", "created_at", "started_at", "finished_at", "links"]

    def _scanner(self, task: ScanTask):
        return task.assigned_scanner or task.requested_scanner

    def get_scanner_instance(self, task: ScanTask) -> str | None:
        scanner = self._scanner(task)
        return scanner.name if scanner else None


class ScanDetailSerializer(ScanListSerializer):
    scanner_url = serializers.SerializerMethodField()
    requested_by = serializers.SerializerMethodField()
    api_client = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField()
    estimated_wait_seconds = serializers.SerializerMethodField()
    estimated_wait_basis = serializers.SerializerMethodField()
    results_file = serializers.SerializerMethodField()
    approval = serializers.SerializerMethodField()
    troubleshooting = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()

    class Meta(ScanListSerializer.Meta):
        fields = [*ScanListSerializer.Meta.fields, "trace_id", "description", "scanner_url", "scanner_status",
                  "requested_by", "requested_via", "api_client", "queue_position", "estimated_wait_seconds",
                  "estimated_wait_basis",
                  "timeout_seconds", "deadline_at", "claimed_at", "updated_at", "last_accessed_at", "attempts",
                  "error_message", "results_summary", "validation", "warnings", "troubleshooting", "results_file",
                  "approval", "events"]

    def _wait(self, task: ScanTask):
        cache = self.context.setdefault("_waits", {})
        if task.pk not in cache:
            cache[task.pk] = cached_estimated_wait(task, settings.SCANPOOL_API_WAIT_CACHE_SECONDS)
        return cache[task.pk]

    def get_scanner_url(self, task: ScanTask) -> str | None:
        scanner = self._scanner(task)
        return scanner.url if scanner else None

    def get_requested_by(self, task: ScanTask) -> str | None:
        return task.requested_by.get_username() if task.requested_by_id else None

    def get_api_client(self, task: ScanTask) -> str | None:
        """The name of the API token that submitted it (never the key)."""
        return task.api_token.name if task.api_token_id else None

    def get_queue_position(self, task: ScanTask) -> int | None:
        return self._wait(task).position if task.status == "queued" else None

    def get_estimated_wait_seconds(self, task: ScanTask) -> int | None:
        return self._wait(task).seconds if task.status == "queued" else None

    @extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
    def get_estimated_wait_basis(self, task: ScanTask) -> dict[str, Any] | None:
        return self._wait(task).basis if task.status == "queued" else None

    @extend_schema_field({"type": "array", "items": {"type": "object", "additionalProperties": True}})
    def get_troubleshooting(self, task: ScanTask) -> list[dict[str, Any]]:
        """The results' troubleshooting; for a scan whose results are still on its scanner, how to fetch them again."""
        extra = refetch_advice(task)
        return [*(task.troubleshooting or []), extra] if extra else task.troubleshooting

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "size": {"type": "integer", "nullable": True}, "sha256": {"type": "string"}}})
    def get_results_file(self, task: ScanTask) -> dict[str, Any] | None:
        return {"size": task.results_size, "sha256": task.results_sha256} if task.results_file else None

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "required": {"type": "boolean"}, "reason": {"type": "string"}, "approvers": {"type": "string"},
        "expires_at": {"type": "string", "format": "date-time", "nullable": True},
        "decided_by": {"type": "string"}, "decided_at": {"type": "string", "format": "date-time", "nullable": True}}})
    def get_approval(self, task: ScanTask) -> dict[str, Any] | None:
        """Set when the client's policy held the scan for approval: why, who approves, until when, who decided."""
        if not task.approval_reason:
            return None
        pending = task.status == "pending_approval"
        return {"required": pending, "reason": task.approval_reason, "approvers": approvers(task),
                "expires_at": task.approval_expires_at.isoformat() if pending and task.approval_expires_at else None,
                "decided_by": task.approval_decided_by,
                "decided_at": task.approval_decided_at.isoformat() if task.approval_decided_at else None}

    @extend_schema_field(EventSerializer(many=True, allow_null=True))
    def get_events(self, task: ScanTask) -> list[dict[str, Any]] | None:
        if not self.context.get("events", True):
            return None
        # The rows as EventSerializer would give them, without a model instance and a field walk per event.
        stamp = _EVENT_TIME.to_representation
        return [{**row, "created_at": stamp(row["created_at"])}
                for row in task.events.values(*EventSerializer.Meta.fields)]


class ReasonSerializer(StrictSerializer):
    """Optional body of cancel/retry/approve."""

    reason = StrictCharField(required=False, max_length=500)


class RejectSerializer(StrictSerializer):
    """Body of reject: why (the client sees it on the cancelled task)."""

    schema_patterns = {"reason": NOT_BLANK_PATTERN}  # the approval service refuses a blank reason

    reason = StrictCharField(max_length=500, error_messages={
        "required": "give the reason for the rejection: the submitter reads it on the cancelled scan"})
