"""``/healthz`` (the process answers; no database) and ``/readyz`` (ready to take work; 503 names what fails)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from tasks.observability.health import readiness


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    result = readiness()
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)
