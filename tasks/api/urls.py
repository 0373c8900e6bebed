"""Routes of /api/v1/ (namespace ``api``)."""

from __future__ import annotations

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from scanners.api.views import ScannerViewSet
from tasks.api.errors import unknown_api_path
from tasks.api.views.index import IndexView
from tasks.api.views.pools import PoolViewSet
from tasks.api.views.results import ScanHostsView, ScanRawView, ScanResultsView
from tasks.api.views.scans import ScanViewSet
from tasks.api.views.validate import ValidateView

app_name = "api"

router = SimpleRouter()
router.register("scans", ScanViewSet, basename="scan")
router.register("pools", PoolViewSet, basename="pool")
router.register("scanners", ScannerViewSet, basename="scanner")

urlpatterns = [
    path("", IndexView.as_view(), name="index"),
    path("scans/<str:pk>/results/", ScanResultsView.as_view(), name="scan-results"),
    path("scans/<str:pk>/hosts/", ScanHostsView.as_view(), name="scan-hosts"),
    path("scans/<str:pk>/results.nessus", ScanRawView.as_view(), name="scan-raw"),
    path("validate/", ValidateView.as_view(), name="validate"),
    *router.urls,
    re_path(r"^(?P<rest>[\s\S]*)$", unknown_api_path),  # last: any other path is a JSON 404 (DEBUG or not)
]
