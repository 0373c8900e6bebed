"""Throttling per API client (one token = one client; a session is its user): submissions at
``SCANPOOL_API_SUBMIT_RATE``, everything else at ``SCANPOOL_API_READ_RATE``. Counts live in Django's
default cache, which is Redis (``REDIS_URL``): every web process counts a client's requests together.
When that cache cannot be reached the request is let through (logged): throttling protects the service,
it must not take the API down with Redis."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from tasks.models import ApiToken

log = logging.getLogger(__name__)


class ClientRateThrottle(SimpleRateThrottle):
    scope = "read"

    def allow_request(self, request: Request, view) -> bool:
        self.scope = getattr(view, "throttle_scopes", {}).get(getattr(view, "action", None), "read")
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except RedisError as exc:  # the message names the error, never the URL (it holds the password)
            log.warning("API throttle: the cache is unreachable (%s); request let through unthrottled",
                        type(exc).__name__)
            return True

    def get_rate(self) -> str | None:
        # Read at each request (DRF's own class attribute is frozen at import): settings changes apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Request, view) -> str:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return f"scanpool-throttle-{self.scope}-{ident}"
