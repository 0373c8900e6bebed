"""Queues and workers (replaces django-rq's dashboard): superusers, or staff with ``tasks.view_queues``.

Read-only. Retrying a dead letter is the task admin's *Retry selected dead letters* action (or ``manage.py
dlq retry``), which goes through ``tasks.services.retry``; nothing here requeues a raw job.
"""

from __future__ import annotations

import redis
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from tasks.observability.queues import overview

PERMISSION = "tasks.view_queues"


@never_cache
def _queues(request: HttpRequest) -> HttpResponse:
    if not (request.user.is_superuser or request.user.has_perm(PERMISSION)):
        raise PermissionDenied(f"queues and workers need a superuser or the permission {PERMISSION}")
    context = {**admin.site.each_context(request), "title": "Queues and workers"}
    try:
        context.update(overview())
    except redis.RedisError as exc:
        context["redis_error"] = f"{type(exc).__name__}: {exc}"
    return render(request, "ops/queues.html", context)


queues = admin.site.admin_view(_queues)
