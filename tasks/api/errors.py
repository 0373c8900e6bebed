"""One error shape for every 4xx/5xx of the API: ``{"error": {"code", "message", "field"?, "details"?}}``.

- :func:`exception_handler` (DRF's EXCEPTION_HANDLER) reshapes DRF's own errors and maps the
  submission service's :class:`~tasks.errors.SubmissionError` (status, code, field, message) as is;
  a full pool (``PoolFull``), a used-up client budget (``BudgetExceeded``) and throttling answer 429
  with ``Retry-After``; a client-policy refusal carries its ``reason`` and ``limit`` in ``details``.
- :func:`not_found` / :func:`server_error` are the site's handler404/handler500: JSON for ``/api/``
  paths, Django's pages elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tasks.api.auth import WWW_AUTHENTICATE
from tasks.errors import BudgetExceeded, PolicyError, PoolFull, SubmissionError

log = logging.getLogger(__name__)

# The service says "pool"; the API's body field is "scanner_pool".
FIELD_NAMES = {"pool": "scanner_pool"}

_CODES = {
    exceptions.ValidationError: "invalid",
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


# The 400 codes docs/api.md lists for a refused body or query value, and DRF's own codes mapped onto them: a client
# written from the table never meets a code it does not know ("null", "blank", "min_value"…).
VALUE_CODES = frozenset({"invalid", "required", "invalid_type", "unknown_field", "invalid_choice", "max_length",
                         "null_characters_not_allowed", "malformed_request", "invalid_filter", "pool_disabled",
                         "unusable_file"})
_DRF_VALUE_CODES = {"null": "invalid_type", "not_a_list": "invalid_type", "not_a_dict": "invalid_type",
                    "incorrect_type": "invalid_type", "blank": "required", "empty": "required",
                    "does_not_exist": "invalid_choice"}


def value_code(code: str) -> str:
    """The documented code for a DRF validation code (anything unlisted is ``invalid``)."""
    code = _DRF_VALUE_CODES.get(code, code)
    return code if code in VALUE_CODES else "invalid"


def error_body(code: str, message: str, *, field: str | None = None, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    if details:
        error["details"] = details
    return {"error": error}


def _flatten(detail: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """(field path, message, code) of every leaf of a DRF ValidationError detail, in order."""
    out: list[tuple[str, str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors",) else str(key)
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            sub = prefix if not isinstance(value, dict | list) else f"{prefix}[{index}]"
            out += _flatten(value, sub)
    else:
        out.append((prefix, str(detail), value_code(getattr(detail, "code", "invalid") or "invalid")))
    return out


def _submission_error(exc: SubmissionError) -> Response:
    field = FIELD_NAMES.get(exc.field, exc.field)
    if field == "non_field_errors":
        field = None
    details = {"retry_after": exc.retry_after} if isinstance(exc, PoolFull) else None
    if isinstance(exc, PolicyError):  # reason and limit (and, for a budget, used / retry_after / refills_at)
        details = {k: v for k, v in exc.as_dict().items() if k not in ("code", "field", "message")}
    message = f"{field}: {exc.message}" if field else exc.message
    response = Response(error_body(exc.code, message, field=field, details=details), status=exc.status_code)
    if isinstance(exc, PoolFull | BudgetExceeded):
        response["Retry-After"] = str(exc.retry_after)
    if exc.status_code == 401:  # a token revoked while its submission was in flight
        response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, SubmissionError):
        return _submission_error(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or "permission denied")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real 500: Django's handler500 (server_error below) answers it
    if isinstance(exc, exceptions.ValidationError):
        leaves = _flatten(exc.detail) or [("", "invalid request", "invalid")]
        field, message, code = leaves[0]
        details = {f or "non_field_errors": m for f, m, _ in reversed(leaves)} if len(leaves) > 1 else None
        response.data = error_body(code, f"{field}: {message}" if field else message, field=field or None,
                                   details=details)
        return response
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None)
    if code is None:
        code = getattr(exc, "default_code", "error")
    detail = getattr(exc, "detail", None)
    message = str(detail) if detail is not None else str(exc)
    details = None
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait or 1)
        message = f"too many requests from this client: retry in {wait} s"
        details = {"retry_after": wait}
        response["Retry-After"] = str(wait)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        message = _media_type_hint(message, context)
    elif isinstance(exc, exceptions.NotAcceptable):
        message = _accept_hint(message, context)
    elif isinstance(exc, exceptions.MethodNotAllowed) and getattr(context.get("view"), "allowed_methods", None):
        message = f"{message.rstrip('.')}: use {', '.join(context['view'].allowed_methods)}"
    # A lower app (scanners) names the field of its 404 on the DRF exception: it cannot raise SubmissionError.
    response.data = error_body(code, message, field=getattr(exc, "field", None), details=details)
    return response


# What the client should send instead, per media type the endpoint parses (curl's -d sends form data).
_MEDIA_TYPE_FIXES = {
    "application/json": "send the body as JSON with the header 'Content-Type: application/json' "
                        "(curl: -H 'Content-Type: application/json' -d '{...}')",
    "multipart/form-data": "send a multipart/form-data upload (curl: -F file=@scan.nessus)",
}


def _media_type_hint(message: str, context: dict) -> str:
    """DRF's 415 message, plus how to send a body this endpoint reads."""
    request = context.get("request")
    accepted = [parser.media_type for parser in getattr(request, "parsers", None) or ()]
    fixes = [_MEDIA_TYPE_FIXES.get(media_type, f"send {media_type}") for media_type in accepted]
    return f"{message.rstrip('.')}: {'; or '.join(fixes)}" if fixes else message


def _accept_hint(message: str, context: dict) -> str:
    """DRF's 406 message, plus the media types this endpoint answers with."""
    view = context.get("view")
    renderers = view.get_renderers() if view is not None and hasattr(view, "get_renderers") else []
    offered = list(dict.fromkeys(renderer.media_type for renderer in renderers))
    if not offered:
        return message
    return f"{message.rstrip('.')}: this endpoint answers {', '.join(offered)} (or leave Accept out)"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("not_found", f"no API endpoint at {request.path}: see /api/v1/"),
                            status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


@csrf_exempt  # changes nothing; without it a POST got Django's HTML "CSRF verification failed" page
def unknown_api_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    """The last route of /api/v1/: a path no endpoint matches (an id of the wrong form included) is a JSON 404,
    also with ``DEBUG`` on (Django then answers an unresolved path with its HTML debug page, not handler404).
    A GET of an endpoint without its trailing slash is redirected to it, as Django's APPEND_SLASH did."""
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not unknown_api_path:
            if request.method in ("GET", "HEAD"):
                query = request.META.get("QUERY_STRING", "")
                return HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
            return JsonResponse(error_body("not_found", f"no API endpoint at {request.path}: the endpoint is "
                                           f"{request.path}/ (with the trailing slash)"), status=404)
    return not_found(request)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("server_error", "internal error: the administrators have the details in the "
                                       "server log"), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return defaults.server_error(request)
