from django.contrib import admin
from django.urls import include, path

from scanpool_site.metrics_access import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    # django-prometheus' view behind a token / address check (scanpool_site/metrics_access.py).
    path("metrics", metrics, name="prometheus-django-metrics"),
]
