from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from scanpool_site.api_docs import DocsView, SchemaView
from scanpool_site.metrics_access import metrics

# django-rq's dashboard is not mounted: its queue list is static (RQ_QUEUES) while scanpool's queues follow the
# pools in the database, it unpickles job data our queues store as JSON, and its requeue bypasses
# tasks.services.retry. /ops/queues/ replaces it (docs/operations.md, "RQ dashboard").
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    # django-prometheus' view behind a token / address check (scanpool_site/metrics_access.py).
    path("metrics", metrics, name="prometheus-django-metrics"),
    path("", include("tasks.urls")),
    path("api/v1/", include("tasks.api.urls")),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", DocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("api-auth/", include("rest_framework.urls")),  # log in / out links of the browsable API
]

# JSON errors for /api/ paths (tasks.api.errors), Django's pages elsewhere.
handler404 = "tasks.api.errors.not_found"
handler500 = "tasks.api.errors.server_error"
