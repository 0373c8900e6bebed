"""API clients: one token per client, tied to a user, stored as a hash (the key is shown once), and the
target index that lets the scan list find "the scans whose targets contain this address" in SQL.

A token's permissions are its user's Django model permissions, narrowed to reading when
``read_only``. Per-client policies (what a client may scan, budgets, approval) hang off
:class:`ApiToken` by a one-to-one relation of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "sp"  # keys look like sp_<8 hex>_<43 url-safe chars>; the 8 hex are the lookup id


def hash_key(key: str) -> str:
    """SHA-256 of the whole key. Keys carry 256 random bits, so a fast hash is enough (no salt needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """An API client's credential. Only ``key_hash`` is stored; :meth:`issue` returns the key once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the client is, e.g. 'ci-nightly' or 'mcp-agent'.")
    prefix = models.CharField(max_length=8, unique=True, editable=False, help_text="Public id inside the key.")
    key_hash = models.CharField(max_length=64, editable=False)
    read_only = models.BooleanField(default=False, help_text="Only reading, whatever the user's permissions.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Set to revoke the token.")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["user__username", "name"]
        verbose_name = "API token"
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="apitoken_user_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.user.get_username()}, {KEY_PREFIX}_{self.prefix}_…)"

    @classmethod
    def issue(cls, user, name: str, *, read_only: bool = False) -> tuple[ApiToken, str]:
        """Create a token; return it with its key (the only time the key exists outside the client)."""
        token = cls(user=user, name=name, read_only=read_only)
        key = token.set_new_key()
        token.save()
        return token, key

    def set_new_key(self) -> str:
        while True:
            prefix = secrets.token_hex(4)
            if not ApiToken.objects.filter(prefix=prefix).exists():
                break
        key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        self.prefix, self.key_hash = prefix, hash_key(key)
        return key

    @classmethod
    def find(cls, key: str) -> ApiToken | None:
        """The active token whose key this is, or None (constant-time comparison of the hashes)."""
        parts = key.split("_", 2)  # the secret part may itself contain "_"
        if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8:
            return None
        token = cls.objects.active().select_related("user").filter(prefix=parts[1]).first()
        if token is None or not hmac.compare_digest(token.key_hash, hash_key(key)):
            return None
        return token

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def touch(self) -> None:
        """Record use, at most once a minute (a write per request would serialise SQLite)."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


# ------------------------------------------------------------------------------------ target index


def address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """A sortable text form: family digit and fixed-width hex, so ranges compare as strings in SQL."""
    width = 8 if address.version == 4 else 32
    return f"{address.version}:{int(address):0{width}x}"


class TaskTarget(models.Model):
    """One target entry of a task, normalised: an address span (first..last) or a host name.

    Written by ``submit`` with the task; a scan has at most ``SCANPOOL_MAX_TARGETS`` entries, so the
    index stays proportional to what was submitted.
    """

    task = models.ForeignKey("tasks.ScanTask", on_delete=models.CASCADE, related_name="target_index")
    first = models.CharField(max_length=34, blank=True, default="")
    last = models.CharField(max_length=34, blank=True, default="")
    hostname = models.CharField(max_length=253, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["first", "last"], name="tasktarget_span_idx"),
            models.Index(fields=["hostname"], name="tasktarget_hostname_idx"),
        ]

    def __str__(self) -> str:
        return self.hostname or f"{self.first}..{self.last}"
