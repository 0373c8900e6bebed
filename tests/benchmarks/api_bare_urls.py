"""URLs of the API benchmark: the real site plus one bare DRF endpoint with the same authentication,
permission and throttling classes but no work (the baseline)."""

from __future__ import annotations

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from scanpool_site.urls import urlpatterns as site_urls
from tasks.models import ScanTask


class BareView(APIView):
    queryset = ScanTask.objects.none()  # the same model permission check as the scan endpoints

    def get(self, request):
        return Response({"ok": True})

    def post(self, request):
        return Response({"ok": True, "echo": request.data}, status=202)


urlpatterns = [path("bench/bare/", BareView.as_view()), *site_urls]
