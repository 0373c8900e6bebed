from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from scanners.validators import plain_http_problem, validate_ca_bundle, validate_scanner_url
from scanpool_site.fields import EncryptedTextField


class ScannerKind(models.TextChoices):
    NESSUS = "nessus", "Tenable Nessus"


class Health(models.TextChoices):
    UNKNOWN = "unknown", "Unknown (never checked)"
    READY = "ready", "Ready"
    NOT_READY = "not_ready", "Not ready (plugins compiling / starting)"
    UNREACHABLE = "unreachable", "Unreachable"
    UNLICENSED = "unlicensed", "API not licensed"
    AUTH_FAILED = "auth_failed", "Login rejected"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open (one trial)"


# A scanner in one of these health states may receive work (UNKNOWN: never checked yet, so the
# first launch is the check; the breaker protects against a bad one).
SELECTABLE_HEALTH = (Health.READY, Health.UNKNOWN)
# Passing conditions: a scanner last seen in one of these may still get an open breaker's trial once
# the cooldown is over (the trial is the probe), and a call that works marks it ready again. Without
# this a scanner that blinked while a health check ran would sit out until the next check.
PASSING_HEALTH = (Health.UNREACHABLE, Health.NOT_READY)


class ScannerQuerySet(models.QuerySet):
    def usable(self) -> ScannerQuerySet:
        """Scanners that can take work now: enabled, healthy (ready or not checked yet), breaker not open.
        (A half-open breaker's scanner is usable: it is running its trial.)"""
        return self.filter(enabled=True, health__in=SELECTABLE_HEALTH).exclude(breaker_state=BreakerState.OPEN)

    def for_credentials(self) -> ScannerQuerySet:
        """Scanners whose connection is confirmed: the only ones scans with credentials may be sent to."""
        return self.filter(connection_confirmed=True)

    def not_waiting(self) -> ScannerQuerySet:
        """Scanners that did not ask scanpool to wait (``Retry-After``), or whose wait is over (``scanners.pacing``)."""
        return self.filter(not_waiting_q())

    def usable_now(self) -> ScannerQuerySet:
        """Usable and not waiting out a ``Retry-After``: the scanners whose slots a task could get this moment (the
        pools' capacity figures). ``usable()`` keeps a waiting scanner: the wait estimate counts when it ends."""
        return self.usable().not_waiting()


def not_waiting_q(prefix: str = "") -> models.Q:
    """The condition of :meth:`ScannerQuerySet.not_waiting`, for a query reaching scanners through ``prefix``
    (``"scanners__"`` from a pool)."""
    return models.Q(**{f"{prefix}wait_until__isnull": True}) | models.Q(**{f"{prefix}wait_until__lte": timezone.now()})


class Scanner(models.Model):
    pool = models.ForeignKey("pools.Pool", on_delete=models.PROTECT, related_name="scanners")
    name = models.SlugField(max_length=64, help_text="The scanner_instance users pin; unique across pools.")
    kind = models.CharField(max_length=16, choices=ScannerKind.choices, default=ScannerKind.NESSUS)
    description = models.CharField(max_length=200, blank=True, default="", help_text="Free text, e.g. where it runs.")
    # A CharField with our validator: Django's URLValidator rejects single-label hosts like https://dmz-scanner:8834.
    url = models.CharField(
        "URL",
        max_length=500,
        validators=[validate_scanner_url],
        help_text="Base URL of the scanner API, e.g. https://scanner:8834",
    )
    access_key = EncryptedTextField(blank=True, default="", help_text="API access key (write-only).")
    secret_key = EncryptedTextField(blank=True, default="", help_text="API secret key (write-only).")
    username = models.CharField(max_length=150, blank=True, default="", help_text="Session login user.")
    password = EncryptedTextField(blank=True, default="", help_text="Session login password (write-only).")
    verify_tls = models.BooleanField("verify TLS", default=True, help_text="Verify the scanner's TLS certificate.")
    ca_bundle = models.CharField(
        "CA bundle",
        max_length=500,
        blank=True,
        default="",
        validators=[validate_ca_bundle],
        help_text="Absolute path of a PEM CA bundle used to verify the scanner (on the machine the workers run on).",
    )
    allow_plain_http = models.BooleanField(
        "allow plain HTTP",
        default=False,
        help_text="Allow an http:// URL for this scanner (credentials then travel unencrypted). "
        "Off: only https:// unless the pool allows plain HTTP.",
    )
    max_concurrent_scans = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    active_scans = models.PositiveIntegerField(
        default=0, editable=False, help_text="Slots held by scanpool tasks (maintained atomically)."
    )
    enabled = models.BooleanField(default=True)

    # Four eyes on where scan credentials go (docs/security.md): a connection set or changed in the admin is
    # unconfirmed until another person with scanners.confirm_scanner_connection confirms it (or load_scanners
    # writes it); until then authenticated scans, which carry SSH credentials, are never dispatched to it.
    connection_confirmed = models.BooleanField(
        default=False, editable=False,
        help_text="Confirmed for authenticated scans: tasks with credentials may be dispatched to this connection.",
    )
    connection_confirmed_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    connection_confirmed_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Health, as last seen by a health check or a call.
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    health_detail = models.TextField(blank=True, default="", editable=False)
    version = models.CharField(max_length=64, blank=True, default="", editable=False)
    license_info = models.JSONField(default=dict, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    health_checked_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Circuit breaker, shared by all workers through this row.
    breaker_state = models.CharField(max_length=16, choices=BreakerState.choices, default=BreakerState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    breaker_opened_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)

    # The scanner's own request to be left alone (HTTP 429/503 Retry-After), shared by all workers through this row:
    # no dispatch to it, no health check by the reconcile, before this time (scanners.pacing). Past: the wait is over.
    wait_until = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="The scanner answered 429/503 with Retry-After: scanpool gives it no new scan and the reconcile does "
        "not call it before this time (a time in the past: that wait is over).",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScannerQuerySet.as_manager()

    class Meta:
        ordering = ["pool__name", "name"]
        permissions = [
            ("confirm_scanner_connection", "Can confirm a scanner's connection for authenticated scans (four eyes)")
        ]
        constraints = [
            models.UniqueConstraint(fields=["name"], name="scanner_name_unique"),
            models.CheckConstraint(
                condition=models.Q(max_concurrent_scans__gte=1), name="scanner_max_concurrent_scans_gte_1"
            ),
        ]
        indexes = [
            models.Index(fields=["pool", "enabled", "health", "breaker_state"], name="scanner_selectable_idx"),
            models.Index(fields=["health"], name="scanner_health_idx"),
            models.Index(fields=["breaker_state"], name="scanner_breaker_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Scanner {self.pk}: {self.name} ({self.url})>"

    def clean(self) -> None:
        super().clean()
        pool_allows = bool(self.pool_id and self.pool.allow_plain_http)
        problem = plain_http_problem(self.url, allowed=self.allow_plain_http or pool_allows)
        if problem:
            raise ValidationError({"url": f"URL {problem}"}, code="plain_http")

    @property
    def plain_http_allowed(self) -> bool:
        return self.allow_plain_http or bool(self.pool_id and self.pool.allow_plain_http)

    @property
    def auth_mode(self) -> str:
        return "api_keys" if self.access_key and self.secret_key else "session"

    @property
    def utilisation(self) -> float:
        return self.active_scans / self.max_concurrent_scans if self.max_concurrent_scans else 1.0

    @property
    def waiting_until(self) -> datetime | None:
        """When the wait this scanner asked for (``Retry-After``) ends, while it is not over; None: no wait now."""
        return self.wait_until if self.wait_until is not None and self.wait_until > timezone.now() else None

    @property
    def usable(self) -> bool:
        """Can take work now: what ``Scanner.objects.usable()`` selects, for a scanner already loaded."""
        return self.enabled and self.health in SELECTABLE_HEALTH and self.breaker_state != BreakerState.OPEN

    @property
    def usable_now(self) -> bool:
        """Usable and not waiting out a ``Retry-After``: what ``Scanner.objects.usable_now()`` selects."""
        return self.usable and self.waiting_until is None


class ScannerEventKind(models.TextChoices):
    URL_CHANGED = "url_changed", "URL changed"
    CONNECTION_CHANGED = "connection_changed", "Connection changed"
    SECRETS_CLEARED = "secrets_cleared", "Stored secrets cleared"
    NEEDS_CONFIRMATION = "needs_confirmation", "Connection needs confirmation"
    CONNECTION_CONFIRMED = "connection_confirmed", "Connection confirmed"


class ScannerEvent(models.Model):
    """Append-only history of a scanner's connection: who pointed it where, and which secrets were dropped."""

    scanner = models.ForeignKey(Scanner, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=32, choices=ScannerEventKind.choices)
    actor = models.CharField(max_length=150, blank=True, default="", help_text="User or command that did it.")
    message = models.TextField()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["scanner", "-at"], name="scanner_event_scanner_at_idx")]

    def __str__(self) -> str:
        return f"{self.scanner_id} {self.kind} {self.at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("scanner events are append-only: they are never changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]
