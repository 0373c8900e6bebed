"""Scanners as the API shows them: health, version, breaker, slots, URL. Never a credential."""

from __future__ import annotations

from rest_framework import serializers

from scanners.models import Scanner


class ScannerSerializer(serializers.ModelSerializer):
    pool = serializers.CharField(source="pool.name", read_only=True)

    class Meta:
        model = Scanner
        # An allow-list: access_key, secret_key, username and password are never listed.
        fields = ["name", "pool", "kind", "description", "url", "enabled", "health", "health_detail", "version",
                  "last_seen_at", "health_checked_at", "breaker_state", "consecutive_failures", "breaker_opened_at",
                  "active_scans", "max_concurrent_scans", "verify_tls"]
        read_only_fields = fields
