"""Throttling per API client (one token = one client; a session is its user): submissions at
``SCANPOOL_API_SUBMIT_RATE``, everything else at ``SCANPOOL_API_READ_RATE``.

The count is a sliding window kept in Redis (``REDIS_URL``) and checked and recorded by one Lua script, so
it is atomic: every web process and host counts a client's requests together, and concurrent requests
cannot all pass on the same count. (DRF's own ``SimpleRateThrottle`` reads the history from the cache and
writes it back: concurrent requests in several gunicorn workers overwrite each other's entries and a client
gets past its rate, DRF issue #5181.) Each request costs one round trip, whatever the rate; times come
from the Redis server's clock, so web hosts need not agree on the time. A refused request is not counted.

When Redis cannot be reached the request is let through (logged): throttling protects the service, it must
not take the API down with Redis.
"""

from __future__ import annotations

import logging
import os
import threading

import redis
from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from tasks.models import ApiToken

log = logging.getLogger(__name__)

KEY_PREFIX = "scanpool:throttle:"

# KEYS[1]: the client's window (a sorted set of request times in µs). ARGV: window (µs), limit, a unique member.
# Returns {1, 0} when the request is allowed (and recorded), {0, µs until the oldest request leaves the window}
# ({0, window} with a limit of 0: nothing is ever counted).
_SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], t, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] == nil then
  return {0, window}
end
return {0, tonumber(oldest[2]) + window - t}
"""

_local = threading.local()


def connection() -> redis.Redis:
    """The throttle's Redis client on ``settings.REDIS_URL`` (one per process, thread and URL), with short
    socket timeouts: a hung Redis must not hang the API."""
    key = (os.getpid(), settings.REDIS_URL)
    if getattr(_local, "key", None) != key:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        _local.client, _local.script, _local.key = client, client.register_script(_SCRIPT), key
    return _local.client


def _script():
    connection()
    return _local.script


class ClientRateThrottle(SimpleRateThrottle):
    scope = "read"

    def allow_request(self, request: Request, view) -> bool:
        self.scope = getattr(view, "throttle_scopes", {}).get(getattr(view, "action", None), "read")
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self._wait = None
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        try:
            allowed, wait_us = _script()(keys=[key], args=[self.duration * 1_000_000, self.num_requests,
                                                           os.urandom(8).hex()])
        except RedisError as exc:  # the message names the error, never the URL (it holds the password)
            log.warning("API throttle: Redis is unreachable or refused the count (%s); request let through unthrottled",
                        type(exc).__name__)
            return True
        if allowed:
            return True
        self._wait = max(int(wait_us), 1) / 1_000_000  # > 0: DRF answers Retry-After ≥ 1
        return False

    def wait(self) -> float | None:
        return self._wait

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
        return f"{KEY_PREFIX}{self.scope}:{ident}"
