"""Operations URLs: health probes and the staff pages (live dashboard, queues and workers)."""

from django.urls import path

from tasks.views import dashboard, health, queues

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("ops/dashboard/", dashboard.dashboard, name="ops-dashboard"),
    path("ops/dashboard/live/", dashboard.dashboard_fragment, name="ops-dashboard-live"),
    path("ops/queues/", queues.queues, name="ops-queues"),
]
