"""The live dashboard (staff only): the page, and the fragment its script fetches every few seconds."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from tasks.observability.charts import bar_chart, rate_chart
from tasks.observability.dashboard import snapshot


def _context(request: HttpRequest) -> dict:
    data = snapshot()
    labels = [f"{b.start:%H}h" for b in data["hours"]]
    data["scans_chart"] = bar_chart([b.scans for b in data["hours"]], labels,
                                    title="Scans ended per hour, last 24 h", chart_id="chart-scans")
    data["auth_chart"] = rate_chart([b.auth_failure_rate for b in data["hours"]], labels,
                                    title="Authentication failure rate of authenticated scans, last 24 h",
                                    chart_id="chart-auth")
    data["refresh_seconds"] = settings.SCANPOOL_DASHBOARD_REFRESH
    return data


@never_cache
def _dashboard(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), **_context(request), "title": "Live dashboard"}
    return render(request, "ops/dashboard.html", context)


@never_cache
def _fragment(request: HttpRequest) -> HttpResponse:
    return render(request, "ops/_dashboard_live.html", _context(request))


# admin_view: staff only, anonymous users go to the admin login (and back here after it).
dashboard = admin.site.admin_view(_dashboard)
dashboard_fragment = admin.site.admin_view(_fragment)
