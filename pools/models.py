from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

RENAME_REFUSED = (
    "a pool keeps the name it was created with: its RQ queues (scanpool-<name>), WORKER_POOLS and scanners.yaml "
    "name it, and a rename would strand the launch, poll and dispatch jobs waiting in its old queues (claimed "
    "tasks holding their slots forever). Create a pool with the new name and move the scanners to it instead"
)


class Pool(models.Model):
    """A group of scanners (a network zone or a purpose) with its own RQ queue."""

    name = models.SlugField(
        max_length=64,
        help_text="Slug (letters, digits, '-', '_'); the pool's RQ queue name derives from it.",
    )
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True, help_text="A disabled pool accepts no new scans.")
    scope = models.JSONField(
        default=list,
        blank=True,
        help_text='Allow-list of targets: CIDRs, addresses, hostnames or "*.domain" patterns. Empty = no target is '
        "allowed unless allow_any_target is set.",
    )
    allow_any_target = models.BooleanField(
        default=False,
        help_text="Allow every target (the scope no longer restricts). Loopback, link-local/metadata addresses and "
        "the scanners' own addresses stay refused unless the scope lists them explicitly.",
    )
    max_queued = models.PositiveIntegerField(
        default=0, help_text="Backpressure: most tasks waiting in the queue (0 = no limit)."
    )
    scan_timeout_seconds = models.PositiveIntegerField(
        default=24 * 3600,
        validators=[MinValueValidator(1)],
        help_text="Default hard deadline of a scan, in seconds (overridable per task).",
    )
    poll_interval_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)], help_text="Seconds between two status polls of a running scan."
    )
    allow_plain_http = models.BooleanField(
        default=False,
        help_text="Allow http:// URLs for this pool's scanners (their credentials then travel unencrypted).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["name"], name="pool_name_unique"),
            models.CheckConstraint(condition=models.Q(scan_timeout_seconds__gte=1), name="pool_scan_timeout_gte_1"),
            models.CheckConstraint(condition=models.Q(poll_interval_seconds__gte=1), name="pool_poll_interval_gte_1"),
        ]
        indexes = [models.Index(fields=["enabled"], name="pool_enabled_idx")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        update_fields = kwargs.get("update_fields")
        if self.pk is not None and (update_fields is None or "name" in update_fields):
            stored = Pool.objects.filter(pk=self.pk).values_list("name", flat=True).first()
            if stored is not None and stored != self.name:
                raise ValidationError({"name": f"cannot rename pool {stored!r} to {self.name!r}: {RENAME_REFUSED}"},
                                      code="rename")
        super().save(*args, **kwargs)

    @property
    def queue_name(self) -> str:
        return f"scanpool-{self.name}"


class PoolEvent(models.Model):
    """Append-only record of security-relevant changes to a pool (scope, ``allow_any_target``): who, when, what."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, blank=True, default="", help_text="Who made the change (user, file…).")
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.message[:60]}"
