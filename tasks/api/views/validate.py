"""``POST /api/v1/validate/``: check any ``.nessus`` export; the same document as
``manage.py validate_nessus --json``. Stores nothing: the upload lives in a temporary file that is
removed before the answer leaves."""

from __future__ import annotations

import os
import tempfile

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import parsers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from scanpool_site.query import StrictQueryMixin
from tasks.api.fields import StrictSerializer
from tasks.errors import SubmissionError
from tasks.management.commands.validate_nessus import as_document
from tasks.models import ScanTask, ScanType
from tasks.results.analysis import analyze_file
from tasks.results.parser import NessusParseError


class TooLarge(SubmissionError):
    status_code = 413
    code = "too_large"


class ValidateRequest(StrictSerializer):
    file = serializers.FileField(help_text=".nessus (NessusClientData_v2) export")
    scan_type = serializers.ChoiceField(choices=ScanType.choices, required=False,
                                        help_text="default: inferred from the file")


class ValidateView(StrictQueryMixin, APIView):
    queryset = ScanTask.objects.all()  # permission: tasks.view_scantask
    parser_classes = [parsers.MultiPartParser]
    required_permissions = {"post": ["tasks.view_scantask"]}
    read_actions = ("post",)  # stores nothing: a read-only token may check an upload
    query_parameters = {"post": ()}

    @extend_schema(summary="Validate a .nessus export (stores nothing)",
                   request={"multipart/form-data": ValidateRequest},
                   responses={200: inline_serializer("ValidationDocument", fields={
                       "hosts": serializers.IntegerField(), "findings": serializers.IntegerField(),
                       "severity_counts": serializers.DictField(child=serializers.IntegerField()),
                       "host_verdicts": serializers.DictField(), "verdict": serializers.CharField(),
                       "warnings": serializers.ListField(child=serializers.CharField())}),
                       413: OpenApiResponse(description="the file is larger than SCANPOOL_API_MAX_UPLOAD_BYTES")})
    def post(self, request: Request) -> Response:
        limit = settings.SCANPOOL_API_MAX_UPLOAD_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit + 64 * 1024:  # refuse before reading the body (multipart framing allowed for)
            raise TooLarge("file", f"the upload is {declared} bytes; at most {limit} are accepted "
                           "(SCANPOOL_API_MAX_UPLOAD_BYTES): validate the file with manage.py validate_nessus")
        data = request.data  # a QueryDict of the form, or {} for a request without a body
        form = ValidateRequest(data={**(data.dict() if hasattr(data, "dict") else data), **request.FILES.dict()})
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        if upload.size > limit:
            raise TooLarge("file", f"the file is {upload.size} bytes; at most {limit} are accepted "
                           "(SCANPOOL_API_MAX_UPLOAD_BYTES)")
        fd, path = tempfile.mkstemp(prefix="scanpool-validate-", suffix=".nessus")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in upload.chunks():
                    handle.write(chunk)
            analysis, reader = analyze_file(path, scan_type=form.validated_data.get("scan_type"))
        except NessusParseError as exc:
            raise SubmissionError("file", f"not a usable .nessus export: {exc.message}"
                                  + (f" (line {exc.line})" if exc.line else ""), code="unusable_file") from None
        finally:
            os.unlink(path)
            upload.close()
        return Response(as_document(analysis, reader))
