"""Who may read ``/metrics``: django-prometheus' own view, behind an access check (not a fork of it).

* ``SCANPOOL_METRICS_TOKEN`` set: the request must carry ``Authorization: Bearer <token>`` (compared in
  constant time), else 401.
* ``SCANPOOL_METRICS_ALLOWED_IPS`` set (addresses or CIDRs): the client address (``REMOTE_ADDR``, the peer the
  web server sees) must be in one of them, else 403.
* Both set: both must hold. Neither set: loopback clients only, and only when the request did not come
  through a proxy (no ``X-Forwarded-For`` / ``Forwarded`` / ``X-Real-IP``: behind a local reverse proxy every
  client would look like loopback), else 403.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django_prometheus.exports import ExportToDjangoView

PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def client_address(request: HttpRequest) -> Address | None:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def token_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _deny(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def access_denial(request: HttpRequest) -> JsonResponse | None:
    """The 401/403 answer for a request that may not read the metrics; ``None`` when it may."""
    token = settings.SCANPOOL_METRICS_TOKEN
    allowed = _networks(tuple(settings.SCANPOOL_METRICS_ALLOWED_IPS))
    address = client_address(request)
    if allowed:
        if address is None or not any(address in network for network in allowed):
            return _deny(403, "metrics: client address not allowed")
    elif not token:
        proxied = any(request.META.get(header) for header in PROXY_HEADERS)
        if address is None or not address.is_loopback or proxied:
            return _deny(403, "metrics: served to loopback clients only (set SCANPOOL_METRICS_TOKEN)")
    if token and not token_matches(request, token):
        return _deny(401, "metrics: bearer token required")
    return None


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    return access_denial(request) or ExportToDjangoView(request)
