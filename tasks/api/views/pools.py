"""``/api/v1/pools/``: each pool with its scanners, capacity, load, queue depth and breakers; the detail
adds dead letters and the estimated wait of a task submitted now. Pools combine scanners and tasks,
so they are served from tasks (DESIGN §8). The list costs three queries whatever the number of pools."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from pools.models import Pool
from scanners.api.serializers import PoolScannerSerializer
from scanners.models import BreakerState, Scanner
from scanpool_site.query import StrictQueryMixin
from tasks.capacity import estimated_wait
from tasks.errors import NotFoundError
from tasks.models import ScanTask, TaskStatus
from tasks.pool_load import PoolLoad
from tasks.queues import pool_queues


class PoolSerializer(serializers.ModelSerializer):
    scanners = PoolScannerSerializer(many=True, read_only=True)
    capacity = serializers.SerializerMethodField()
    total_slots = serializers.SerializerMethodField()
    active = serializers.SerializerMethodField()
    free = serializers.SerializerMethodField()
    waiting_slots = serializers.SerializerMethodField()
    utilisation = serializers.SerializerMethodField()
    queue_depth = serializers.IntegerField(source="queued_count", read_only=True)
    running = serializers.IntegerField(source="running_count", read_only=True)
    breakers = serializers.SerializerMethodField()

    class Meta:
        model = Pool
        fields = ["name", "description", "enabled", "scope", "max_queued", "scan_timeout_seconds",
                  "poll_interval_seconds", "capacity", "total_slots", "waiting_slots", "active", "free", "utilisation",
                  "queue_depth", "running", "breakers", "scanners"]

    def _load(self, pool: Pool) -> PoolLoad:
        """The one computation of a pool's load (``tasks.pool_load.PoolLoad``), shared with the admin: free slots and
        utilisation are of the usable capacity; scans on a scanner that is down or whose breaker is open count in
        ``active`` only (they made utilisation read 5.0 during an outage)."""
        loads = self.context.setdefault("_loads", {})
        if pool.pk not in loads:
            loads[pool.pk] = PoolLoad.of_scanners(pool.scanners.all())
        return loads[pool.pk]

    def get_capacity(self, pool: Pool) -> int:
        return self._load(pool).capacity

    def get_total_slots(self, pool: Pool) -> int:
        return self._load(pool).total_slots

    def get_active(self, pool: Pool) -> int:
        return self._load(pool).active

    def get_waiting_slots(self, pool: Pool) -> int:
        return self._load(pool).waiting_slots

    def get_free(self, pool: Pool) -> int:
        return self._load(pool).free

    def get_utilisation(self, pool: Pool) -> float:
        return round(self._load(pool).utilisation, 3)

    def get_breakers(self, pool: Pool) -> dict[str, int]:
        counts = dict.fromkeys(BreakerState.values, 0)
        for scanner in pool.scanners.all():
            counts[scanner.breaker_state] += 1
        return counts


class PoolDetailSerializer(PoolSerializer):
    dead_letters = serializers.SerializerMethodField()
    estimated_wait_seconds = serializers.SerializerMethodField()
    estimated_wait_basis = serializers.SerializerMethodField()

    class Meta(PoolSerializer.Meta):
        fields = [*PoolSerializer.Meta.fields, "dead_letters", "estimated_wait_seconds", "estimated_wait_basis"]

    def get_dead_letters(self, pool: Pool) -> int | None:
        try:
            return sum(queue.failed_job_registry.count for queue in pool_queues(pool))
        except Exception:  # Redis down: the rest of the page still answers
            return None

    def _wait(self, pool: Pool):
        if "_wait" not in self.context:
            # A task submitted now: behind every queued task of the pool.
            self.context["_wait"] = estimated_wait(ScanTask(pool=pool, status=TaskStatus.QUEUED,
                                                            created_at=timezone.now()))
        return self.context["_wait"]

    def get_estimated_wait_seconds(self, pool: Pool) -> int | None:
        return self._wait(pool).seconds

    def get_estimated_wait_basis(self, pool: Pool) -> dict:
        return self._wait(pool).basis


@extend_schema_view(list=extend_schema(summary="List pools with their load"),
                    retrieve=extend_schema(summary="One pool: load, dead letters, estimated wait"))
class PoolViewSet(StrictQueryMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Pool.objects.all()
    query_parameters = {"list": (), "retrieve": ()}
    lookup_field = "name"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    pagination_class = None

    def get_queryset(self):
        scanners = Scanner.objects.select_related("pool").defer("access_key", "secret_key", "password",
                                                                 "license_info")
        waiting = Q(tasks__status=TaskStatus.QUEUED, tasks__claimed_at__isnull=True)
        return Pool.objects.annotate(
            queued_count=Count("tasks", filter=waiting, distinct=True),
            running_count=Count("tasks", filter=Q(tasks__status=TaskStatus.RUNNING), distinct=True),
        ).prefetch_related(Prefetch("scanners", queryset=scanners))

    def get_serializer_class(self):
        return PoolDetailSerializer if self.action == "retrieve" else PoolSerializer

    def get_object(self) -> Pool:
        try:
            return self.get_queryset().get(name=self.kwargs["name"])
        except Pool.DoesNotExist:
            names = ", ".join(Pool.objects.order_by("name").values_list("name", flat=True)) or "none configured"
            raise NotFoundError("name", f"no pool named {self.kwargs['name']!r}; pools: {names}") from None

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self.get_serializer(self.get_object()).data)
