"""A scan's results: findings (JSON pages, NDJSON or CSV streams, grouped by plugin), hosts with their
authentication verdicts, and the raw ``.nessus`` export. 409 while the scan has no results."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from scanpool_site.query import StrictQueryMixin, check_query
from tasks import refetch
from tasks.api.views.scans import ERROR_RESPONSES, choice_values, choices
from tasks.errors import NotFoundError, SubmissionError, TaskStateError
from tasks.models import TERMINAL_STATUSES, AuthStatus, ScanTask
from tasks.models.states import RETRYABLE_STATUSES
from tasks.results.filters import FILTER_NAMES
from tasks.results.groups import get_plugin_page
from tasks.results.query import MAX_PAGE_SIZE, PROFILES, check_controls, get_hosts_page, get_page, iter_jsonl
from tasks.results.storage import results_path

NDJSON = "application/x-ndjson"
# Every field of the summary profile (docs/api.md); the first eleven keep their places, the rest were added after.
CSV_COLUMNS = ("host", "port", "protocol", "plugin_id", "plugin_name", "severity", "severity_name", "plugin_family",
               "cvss", "cves", "exploit_available", "cvss3", "cvss2", "svc_name", "risk_factor", "id")
NOT_FILTERS = {"group", "events"}


class NDJSONRenderer(renderers.BaseRenderer):
    media_type = NDJSON
    format = "ndjson"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # errors only; results stream
        return renderers.JSONRenderer().render(data)


class CSVRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # errors only; results stream
        return renderers.JSONRenderer().render(data)


class NessusRenderer(renderers.BaseRenderer):
    """What the raw export is (``Accept: application/xml`` may ask for it); errors are JSON (finalize_response)."""

    media_type = "application/xml"
    format = "xml"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # errors only; the export streams
        return renderers.JSONRenderer().render(data)


class JSONErrorsMixin:
    """An error is JSON, and says so: not JSON labelled with the media type asked for (CSV, NDJSON, XML)."""

    def finalize_response(self, request: Request, response, *args, **kwargs):
        renderer = getattr(request, "accepted_renderer", None)
        if response.status_code >= 400 and renderer is not None and not isinstance(
                renderer, renderers.JSONRenderer | renderers.BrowsableAPIRenderer):
            request.accepted_renderer, request.accepted_media_type = renderers.JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


def _task(pk: str) -> ScanTask:
    try:
        task = ScanTask.objects.only("id", "status", "results_file", "pool_id").get(pk=pk)
    except (ScanTask.DoesNotExist, ValueError, DjangoValidationError):
        raise NotFoundError("task_id", f"no scan task {pk}") from None
    on_scanner = None
    if not task.results_file and task.status in RETRYABLE_STATUSES:  # still on its scanner? (tasks.refetch)
        on_scanner = ScanTask.objects.select_related("assigned_scanner").defer("credentials").get(pk=task.pk)
    if on_scanner is not None and refetch.advice(on_scanner):
        raise TaskStateError("task_id", f"task {task.id} ended {task.status} without results, which are still on "
                             f"scanner {on_scanner.assigned_scanner.name}: once the cause in its status (GET "
                             f"/api/v1/scans/{task.id}/) is fixed, fetch them again (POST "
                             f"/api/v1/scans/{task.id}/fetch-results/); a retry would scan the targets again",
                             code="no_results")
    if not task.results_file and task.status in TERMINAL_STATUSES:
        again = ("retry it (POST …/retry/) or submit a new scan" if task.status in RETRYABLE_STATUSES
                 else "submit a new scan (a cancelled scan cannot be retried)")
        raise TaskStateError("task_id", f"task {task.id} ended {task.status} without results and will never have any: "
                             f"its status (GET /api/v1/scans/{{id}}/) says why; {again}", code="no_results")
    if not task.results_file:
        raise TaskStateError("task_id", f"task {task.id} is {task.status} and has no results yet: follow its status "
                             "(GET /api/v1/scans/{id}/) until it is completed or failed with results",
                             code="no_results")
    return task


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection). Scanner text reaches the
# cells (host and plugin names come from the export), so such a cell is written with a leading "'", which
# spreadsheets show as text and strip from the value.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _csv_lines(rows: Iterator[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for line in rows:
        finding = json.loads(line)
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_csv_cell(" ".join(finding[c]) if c == "cves" else finding.get(c, "")) for c in CSV_COLUMNS])
        yield buffer.getvalue()


PAGE = inline_serializer("FindingsPage", fields={
    "page": serializers.IntegerField(), "page_size": serializers.IntegerField(), "total": serializers.IntegerField(),
    "pages": serializers.IntegerField(), "profile": serializers.CharField(), "ordering": serializers.CharField(),
    "results": serializers.ListField(child=serializers.DictField()),
})


class ScanResultsView(JSONErrorsMixin, APIView):
    queryset = ScanTask.objects.all()  # for the permission: tasks.view_scantask
    renderer_classes = [renderers.JSONRenderer, NDJSONRenderer, CSVRenderer, renderers.BrowsableAPIRenderer]

    @extend_schema(
        summary="A scan's findings",
        parameters=[
            OpenApiParameter("profile", str, enum=list(PROFILES)),
            OpenApiParameter("ordering", str),
            OpenApiParameter("page", {"type": "integer", "minimum": 1}),
            OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}),
            OpenApiParameter("group", str, enum=["plugin"], description="one row per plugin"),
            OpenApiParameter("format", str, enum=["json", "csv", "ndjson"],
                             description="csv streams CSV; Accept: application/x-ndjson streams JSON lines"),
            *[OpenApiParameter(name, str) for name in FILTER_NAMES],
        ],
        responses={200: PAGE, (200, NDJSON): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR,
                   **ERROR_RESPONSES},
    )
    def get(self, request: Request, pk: str):
        check_query(request, allowed=None, typed=("profile", "page", "page_size", "group", "format"))  # names: below
        task = _task(pk)
        params = {k: v for k, v in request.query_params.items() if k not in NOT_FILTERS}
        control = {k: params.pop(k, None) for k in ("profile", "ordering", "page", "page_size")}
        params.pop("format", None)
        check_controls(**control)  # also where unused (streams have no pages, groups their own order)
        group = request.query_params.get("group")
        if group not in (None, "", "plugin"):
            raise SubmissionError("group", f"unknown grouping {group!r}: use group=plugin")
        fmt = request.accepted_renderer.format
        if group:
            if fmt != "json" and fmt != "api":
                raise SubmissionError("group", "group=plugin is answered as JSON pages only")
            page = get_plugin_page(task.pk, filters=params, page=control["page"],
                                   page_size=control["page_size"] or 100)
            return Response(page.as_dict())
        if fmt in ("ndjson", "csv"):
            lines = iter_jsonl(task.pk, filters=params, profile=control["profile"] if fmt == "ndjson" else "summary",
                               ordering=control["ordering"])
            if fmt == "ndjson":
                return StreamingHttpResponse(lines, content_type=NDJSON)
            response = StreamingHttpResponse(_csv_lines(lines), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{task.pk}-findings.csv"'
            return response
        page = get_page(task.pk, filters=params, profile=control["profile"], ordering=control["ordering"],
                        page=control["page"], page_size=control["page_size"] or 100)
        return Response(page.as_dict())


class ScanHostsView(APIView):
    queryset = ScanTask.objects.all()

    @extend_schema(
        summary="A scan's hosts with their authentication verdicts and evidence",
        parameters=[OpenApiParameter("verdict", choices(AuthStatus.values), explode=False, style="form",
                                     description="one verdict or several, comma-separated"),
                    OpenApiParameter("page", {"type": "integer", "minimum": 1}),
                    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE})],
        responses={200: PAGE, **ERROR_RESPONSES},
    )
    def get(self, request: Request, pk: str) -> Response:
        check_query(request, allowed={"verdict", "page", "page_size"}, typed=("page", "page_size"))
        choice_values(request, "verdict", AuthStatus.values)  # strict here: no empty item, no space
        task = _task(pk)
        params = request.query_params
        page = get_hosts_page(task.pk, verdict=params.get("verdict"), page=params.get("page"),
                              page_size=params.get("page_size") or 100)
        return Response(page.as_dict())


class ScanRawView(JSONErrorsMixin, StrictQueryMixin, APIView):
    queryset = ScanTask.objects.all()
    # A download tool asking for the export's own type (Accept: application/xml) was answered 406.
    renderer_classes = [renderers.JSONRenderer, NessusRenderer, renderers.BrowsableAPIRenderer]
    query_parameters = {"get": ()}

    @extend_schema(summary="The raw .nessus export (streamed)",
                   responses={(200, "application/xml"): OpenApiResponse(OpenApiTypes.BINARY), **ERROR_RESPONSES})
    def get(self, request: Request, pk: str) -> FileResponse:
        task = _task(pk)
        path = results_path(task.pk)
        if not path.exists():
            raise TaskStateError("task_id", f"the results file of task {task.pk} is missing on the server: "
                                 "ask an administrator", code="no_results")
        return FileResponse(path.open("rb"), as_attachment=True, filename=f"{task.pk}.nessus",
                            content_type="application/xml")
