"""``/api/v1/scans/``: submit, list, read, cancel and retry scans, fetch results again. Thin: tasks.services (and
tasks.refetch) do the work."""

from __future__ import annotations

from datetime import UTC

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from pools.models import Pool
from scanpool_site.query import StrictQueryMixin, check_query
from tasks import refetch, services
from tasks.api.errors import FIELD_NAMES
from tasks.api.serializers import (
    ReasonSerializer,
    RejectSerializer,
    ScanCreateSerializer,
    ScanDetailSerializer,
    ScanListSerializer,
)
from tasks.engine import overlap
from tasks.errors import NotFoundError, SubmissionError
from tasks.models import ApiToken, AuthStatus, ScanTask, ScanType, TaskStatus
from tasks.policies import approval
from tasks.target_index import TargetError, contains_target

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200  # a client's key, body or header (ScanCreateSerializer.idempotency_key: the same)
ERROR_RESPONSES = {code: OpenApiResponse(description=text) for code, text in {
    400: "invalid request (error.field names the field)", 401: "no or bad token",
    403: "forbidden, out of scope or refused by the client's policy (details: reason, limit)",
    404: "unknown pool, scanner or task", 409: "idempotency conflict or wrong task status",
    429: "throttled, pool full or a client budget used up (Retry-After)"}.items()}



# A status read loads the task without its credentials (never shown) and, of its related rows, only what the
# response shows: 57 columns instead of the whole rows' 134 (building and reading them was most of the query's cost).
DETAIL_COLUMNS = (
    *(f.name for f in ScanTask._meta.concrete_fields if f.name != "credentials"),
    "pool__name", "assigned_scanner__name", "assigned_scanner__url", "assigned_scanner__enabled",
    "assigned_scanner__pool_id", "requested_scanner__name",
    "requested_scanner__url", "requested_by__username", "api_token__name",
)

def _is_time(text: str) -> bool:
    try:
        return parse_datetime(text) is not None
    except ValueError:  # well formed, not a time ("2026-13-45 …")
        return False


class NewestFirst(CursorPagination):
    """DRF's cursor pagination, strict: a bad page size is a 400 naming the parameter (DRF serves the default page
    size for it); a cursor the list did not give is a 404 (no such page, as in DRF) naming the parameter."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = None
        else:  # a well-formed cursor whose position is no time of this list (crafted): no such page either
            if cursor is None or cursor.position is None or _is_time(cursor.position):
                return cursor
        raise NotFoundError("cursor", "is not a cursor of this list (no such page): follow the next and previous "
                            "links as given, or leave cursor out for the first page")

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {**parameter["schema"], "minimum": 1, "maximum": self.max_page_size}
            if parameter["name"] == self.cursor_query_param:  # "cursor=" is refused: a loop must not restart
                parameter["schema"] = {**parameter["schema"], "minLength": 1}
        return parameters

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        hint = f"use 1 to {self.max_page_size}, or leave page_size out for {self.page_size}"
        try:
            size = int(raw, 10)
        except ValueError:
            raise SubmissionError("page_size", f"{raw!r} is not a whole number: {hint}") from None
        if not 1 <= size <= self.max_page_size:
            raise SubmissionError("page_size", f"{size} is out of range: {hint}")
        return size


def _events(request: Request) -> bool:
    check_query(request, allowed={"events"})
    raw = request.query_params.get("events", "1")
    if raw not in ("0", "1"):
        raise SubmissionError("events", f"{raw!r} is not 0 or 1: events=0 leaves the event timeline out")
    return raw == "1"


def choice_values(request: Request, name: str, choices: list[str]) -> list[str] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    values = raw.split(",")  # an empty one (status=, status=queued,) is an error too (check_query, below)
    bad = [v for v in values if v not in choices]
    if bad:
        what = f"unknown value {bad[0]!r}" if bad[0] else "an empty value"
        raise SubmissionError(name, f"{what}: use one or more of {', '.join(choices)}, comma-separated")
    return values


def _when(request: Request, name: str):
    raw = request.query_params.get(name)
    if not raw:
        return None
    hint = "use ISO 8601, e.g. 2026-12-01T00:00:00Z"
    try:
        value = parse_datetime(raw)
    except ValueError:  # well formed but not a date (month 13, hour 25, an offset of a day or more)
        value = None
    if value is None:
        raise SubmissionError(name, f"{raw!r} is not a date-time: {hint}")
    if timezone.is_naive(value):
        value = value.replace(tzinfo=timezone.get_current_timezone())
    try:
        # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts, and the database compares in UTC.
        return value.astimezone(UTC)
    except OverflowError:
        raise SubmissionError(name, f"{raw!r} is out of range: {hint}") from None


def _default_pool() -> str:
    if settings.SCANPOOL_DEFAULT_POOL:
        return settings.SCANPOOL_DEFAULT_POOL
    names = list(Pool.objects.filter(enabled=True).values_list("name", flat=True)[:2])
    if len(names) == 1:
        return names[0]
    raise SubmissionError("scanner_pool", "is required: give the name of a pool (GET /api/v1/pools/ lists them)",
                          code="required")


def choices(values: list[str]) -> dict:
    """A query parameter of one or more of ``values``, comma-separated (style form, not exploded)."""
    return {"type": "array", "items": {"type": "string", "enum": sorted(values)}, "minItems": 1}


LIST_PARAMETERS = [
    OpenApiParameter("status", choices(TaskStatus.values), explode=False, style="form",
                     description="one status or several, comma-separated"),
    OpenApiParameter("pool", str, description="pool name"),
    OpenApiParameter("scanner", str, description="scanner name (assigned or pinned)"),
    OpenApiParameter("scan_type", choices(ScanType.values), explode=False, style="form",
                     description="one scan type or several, comma-separated"),
    OpenApiParameter("authentication_status", choices(AuthStatus.values), explode=False, style="form",
                     description="one authentication status or several, comma-separated"),
    OpenApiParameter("created_after", OpenApiTypes.DATETIME),
    OpenApiParameter("created_before", OpenApiTypes.DATETIME),
    OpenApiParameter("target", str, description="an address, CIDR, range or host name: the scans whose targets "
                     "contain (or overlap) it", examples=[]),
]
LIST_QUERY = {p.name for p in LIST_PARAMETERS} | {"cursor", "page_size"}
# Parameters whose value is a choice, a date or a number: empty is no value of theirs.
LIST_TYPED = ("status", "scan_type", "authentication_status", "created_after", "created_before", "cursor", "page_size")


@extend_schema_view(
    list=extend_schema(summary="List scans, newest first", parameters=LIST_PARAMETERS),
    retrieve=extend_schema(summary="A scan's status", parameters=[
        OpenApiParameter("events", int, enum=[0, 1], description="0 omits the event timeline")],
        responses={200: ScanDetailSerializer, **ERROR_RESPONSES}),
)
class ScanViewSet(StrictQueryMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = ScanTask.objects.all()
    pagination_class = NewestFirst
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"
    required_permissions = {
        "create": ["tasks.add_scantask"],
        "cancel": ["tasks.change_scantask"],
        "retry": ["tasks.change_scantask"],
        "fetch_results": ["tasks.change_scantask"],  # as retry: an operator's decision on a dead letter
        "approve": [approval.APPROVE_PERMISSION],
        "reject": [approval.APPROVE_PERMISSION],
    }
    throttle_scopes = {"create": "submit"}
    # The writes take no query parameter (?idempotency_key=… would be ignored: a second scan); list and retrieve
    # check their own.
    query_parameters = {"create": (), "cancel": (), "retry": (), "fetch_results": (), "approve": (), "reject": ()}

    def get_serializer_class(self):
        if self.action == "create":
            return ScanCreateSerializer
        if self.action == "list":
            return ScanListSerializer
        if self.action in ("cancel", "retry", "fetch_results", "approve"):
            return ReasonSerializer
        if self.action == "reject":
            return RejectSerializer
        return ScanDetailSerializer

    def get_queryset(self):
        qs = ScanTask.objects.select_related("pool", "assigned_scanner", "requested_scanner", "requested_by",
                                             "api_token")
        if self.action != "list":
            return qs
        qs = qs.defer("credentials", "validation", "results_summary", "troubleshooting", "warnings", "description")
        check_query(self.request, allowed=LIST_QUERY, typed=LIST_TYPED)
        params = self.request.query_params
        if (statuses := choice_values(self.request, "status", TaskStatus.values)) is not None:
            qs = qs.filter(status__in=statuses)
        if params.get("pool"):
            qs = qs.filter(pool__name=params["pool"])
        if params.get("scanner"):
            qs = qs.filter(assigned_scanner__name=params["scanner"]) | qs.filter(
                assigned_scanner__isnull=True, requested_scanner__name=params["scanner"])
        if (types := choice_values(self.request, "scan_type", ScanType.values)) is not None:
            qs = qs.filter(scan_type__in=types)
        if (auth := choice_values(self.request, "authentication_status", AuthStatus.values)) is not None:
            qs = qs.filter(auth_status__in=auth)
        if (after := _when(self.request, "created_after")) is not None:
            qs = qs.filter(created_at__gte=after)
        if (before := _when(self.request, "created_before")) is not None:
            qs = qs.filter(created_at__lt=before)
        if params.get("target"):
            try:
                qs = qs.filter(contains_target(params["target"]))
            except TargetError as exc:
                raise SubmissionError("target", str(exc)) from None
        return qs

    def get_object(self) -> ScanTask:
        qs = self.get_queryset()
        if self.action == "retrieve":  # a status read: what the response shows, not the related rows whole
            qs = qs.only(*DETAIL_COLUMNS)
        try:
            return qs.get(pk=self.kwargs["pk"])
        except (ScanTask.DoesNotExist, ValueError, DjangoValidationError):
            raise NotFoundError("task_id", f"no scan task {self.kwargs['pk']}") from None

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        events = _events(request)
        task = self.get_object()
        services.mark_accessed(task)
        return Response(ScanDetailSerializer(task, context={**self.get_serializer_context(), "events": events}).data)

    @extend_schema(
        summary="Submit a scan",
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER,
                                     description="same key + same body → the same task (200); other body → 409")],
        request=ScanCreateSerializer,
        responses={202: ScanDetailSerializer, 200: ScanDetailSerializer, **ERROR_RESPONSES},
    )
    def create(self, request: Request) -> Response:
        serializer = ScanCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = data.get("idempotency_key")
        header = request.headers.get(IDEMPOTENCY_HEADER)
        if header is not None and key is not None and header != key:
            raise SubmissionError("idempotency_key", f"differs from the {IDEMPOTENCY_HEADER} header: send one of them")
        key = key if key is not None else header
        if key and len(key) > MAX_IDEMPOTENCY_KEY:  # the body's is checked by its serializer; this is the header's
            raise SubmissionError("idempotency_key", f"the {IDEMPOTENCY_HEADER} header is {len(key)} characters "
                                  f"long; at most {MAX_IDEMPOTENCY_KEY} are allowed", code="max_length")
        # The dispatch request's Redis round trip overlaps the making of the answer (tasks/engine/overlap.py).
        with overlap.overlapped():
            try:
                task = services.submit(
                    pool=data.get("scanner_pool") or _default_pool(), name=data["name"], targets=data["targets"],
                    scan_type=data["scan_type"], credentials=data.get("credentials"),
                    scanner_instance=data.get("scanner_instance"),
                    idempotency_key=f"api:{request.user.pk}:{key}" if key else None,  # a client's keys are its own
                    timeout_seconds=data.get("timeout_seconds"), description=data.get("description", ""),
                    requested_by=request.user, requested_via="api",
                    api_token=request.auth if isinstance(request.auth, ApiToken) else None,
                )
            except SubmissionError as exc:
                if exc.field == "idempotency_key" and exc.code == "idempotency_conflict":
                    exc.message = "was already used for a different request: send the same request to get that " \
                                  "task back, or use a new key for a new scan"
                exc.field = FIELD_NAMES.get(exc.field, exc.field)
                raise
            replayed = getattr(task, "replayed", False)
            if replayed:  # an earlier task: read it with its relations (a new one has them from the service)
                task = self.get_queryset().get(pk=task.pk)
            body = ScanDetailSerializer(task, context={**self.get_serializer_context(), "events": False}).data
        return Response(body, status=status.HTTP_200_OK if replayed else status.HTTP_202_ACCEPTED,
                        headers={"Location": body["links"]["status"]})

    def _answer(self, task: ScanTask) -> Response:
        """The scan's document after an action (no events), read again with its relations."""
        return Response(ScanDetailSerializer(self.get_queryset().get(pk=task.pk), context={
            **self.get_serializer_context(), "events": False}).data)

    @extend_schema(summary="Cancel a queued or running scan",
                   description="409 invalid_state for a finished scan, and for a running one whose scan already "
                   "completed on its scanner (scanner_status completed): its results are being stored and it ends "
                   "by them.", request=ReasonSerializer,
                   responses={200: ScanDetailSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        reason = _reason(request)  # kept in the task's timeline
        task = services.cancel(self.get_object().pk, actor=_actor(request), reason=reason)
        return self._answer(task)

    @extend_schema(summary="Retry a failed or timed-out scan", request=ReasonSerializer,
                   responses={200: ScanDetailSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        reason = _reason(request)  # kept in the task's timeline
        task = services.retry(self.get_object().pk, actor=_actor(request), reason=reason, user=request.user)
        return self._answer(task)

    @extend_schema(summary="Fetch the results of a failed or timed-out scan again (no new scan)",
                   description="For a scan that completed on its scanner but whose results could not be fetched or "
                   "stored (timeout after its export kept failing; failed with error_kind results or internal before "
                   "anything was stored): the task is running again on the same scanner and scan id "
                   "(scanner_status completed), with a new deadline, and ends completed, failed or timeout by its "
                   "results. No scanner slot is taken; nothing is scanned. 409 invalid_state for any other scan "
                   "(use retry: it scans again) and for a scanner removed, disabled or moved to another pool.",
                   request=ReasonSerializer, responses={200: ScanDetailSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"], url_path="fetch-results")
    def fetch_results(self, request: Request, pk: str) -> Response:
        reason = _reason(request)  # kept in the task's timeline
        task = refetch.refetch(self.get_object().pk, actor=_actor(request), reason=reason, user=request.user)
        return self._answer(task)

    @extend_schema(summary="Approve a scan pending approval (it joins its pool's queue at its original place)",
                   request=ReasonSerializer, responses={200: ScanDetailSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        task = approval.approve(self.get_object().pk, actor=_actor(request), user=request.user,
                                reason=_reason(request))
        return self._answer(task)

    @extend_schema(summary="Reject a scan pending approval (it is cancelled with the reason)",
                   request=RejectSerializer, responses={200: ScanDetailSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        body = RejectSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        task = approval.reject(self.get_object().pk, actor=_actor(request), reason=body.validated_data["reason"])
        return self._answer(task)


def _reason(request: Request) -> str:
    """The optional ``reason`` of an action's body (checked: a string, no unknown fields)."""
    body = ReasonSerializer(data=request.data or {})
    body.is_valid(raise_exception=True)
    return body.validated_data.get("reason", "")


def _actor(request: Request) -> str:
    token = request.auth
    name = request.user.get_username()
    return f"{name} via api token {token.name}" if getattr(token, "name", None) else f"{name} via api"
