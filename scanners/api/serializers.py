"""Scanners as the API shows them: health, version, breaker, slots, URL. Never a credential."""

from __future__ import annotations

from rest_framework import serializers

from scanners.models import Scanner


class ScannerSerializer(serializers.ModelSerializer):
    pool = serializers.CharField(source="pool.name", read_only=True)
    wait_until = serializers.DateTimeField(
        source="waiting_until", read_only=True, allow_null=True,
        help_text="The scanner answered 429/503 with Retry-After: no new scan goes to it before this time; null when "
        "it asked for no wait or the wait is over.")

    class Meta:
        model = Scanner
        # An allow-list: access_key, secret_key, username and password are never listed.
        fields = ["name", "pool", "kind", "description", "url", "enabled", "health", "health_detail", "version",
                  "last_seen_at", "health_checked_at", "breaker_state", "consecutive_failures", "breaker_opened_at",
                  "wait_until", "active_scans", "max_concurrent_scans", "verify_tls", "connection_confirmed"]
        read_only_fields = fields


class PoolScannerSerializer(serializers.ModelSerializer):
    """A scanner as a pool's answer nests it (permission ``pools.view_pool``): where it is and its load, not its
    health detail or version (they can name the scanner's login user); those are in ``/api/v1/scanners/``, which
    needs ``scanners.view_scanner``."""

    class Meta:
        model = Scanner
        fields = ["name", "url", "enabled", "health", "breaker_state", "active_scans", "max_concurrent_scans",
                  "last_seen_at"]
        read_only_fields = fields
