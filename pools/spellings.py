"""Other spellings of an IPv4 address, which the scope checks must not compare as different addresses: IPv6 forms
that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``) and the numeric host spellings the
C library reads as IPv4 (``167837962``, ``0x0a09090b``, ``10.9.2316``, ``010.0.0.1``). Used by :mod:`pools.scope`
(targets, protected scanner addresses) and the scanner URL validation."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import idna

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_COMPAT_FIRST, _COMPAT_LAST = 2, 0xFFFF_FFFF  # ::0.0.0.2 to ::255.255.255.255 (:: and ::1 are protected)
_MAPPED_FIRST, _MAPPED_LAST = 0xFFFF_0000_0000, 0xFFFF_FFFF_FFFF  # ::ffff:0:0/96


def embedded_ipv4_problem(text: str, networks: Iterable[IPNetwork]) -> str | None:
    """Why an IPv6 target that is really IPv4 is refused: an IPv4-mapped (``::ffff:10.0.0.1``) or IPv4-compatible
    (``::10.0.0.1``) address reaches the IPv4 address on a dual-stack scanner, so an IPv6 scope entry (``::/0``)
    or a scanner's IPv4 address could be passed by the other spelling. IPv4 targets are written in IPv4."""
    v6 = [net for net in networks if net.version == 6]
    if v6:
        first = min(int(net.network_address) for net in v6)
        last = max(int(net.broadcast_address) for net in v6)
        if first <= _MAPPED_LAST and last >= _MAPPED_FIRST:
            if first == last:
                v4 = ipaddress.IPv4Address(first & 0xFFFF_FFFF)
                return f"{text!r} is the IPv4 address {v4} written as IPv6: give {v4}"
            return f"{text!r} covers IPv4-mapped IPv6 addresses (::ffff:0:0/96): give IPv4 targets in IPv4 notation"
        if first <= _COMPAT_LAST and last >= _COMPAT_FIRST:
            if first == last:
                v4 = ipaddress.IPv4Address(first)
                return (f"{text!r} is an IPv4-compatible IPv6 address (deprecated) holding the IPv4 address {v4}: "
                        f"give {v4}")
            return (f"{text!r} covers IPv4-compatible IPv6 addresses (::/96, deprecated): give IPv4 targets in IPv4 "
                    "notation")
    return None


def host_address(host: str) -> IPAddress | None:
    """The IP address a URL's host stands for, as the C library reads it: dotted quads, IPv6, and the numeric
    spellings ``inet_aton`` also takes (``167837962``, ``0x0a09090b``, ``10.9.2316``, ``010.0.0.1``). None for a
    host name. An IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError, UnicodeError):
            return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def punycode_host(host: str) -> str | None:
    """The name the HTTP client connects to for a host name with non-ASCII characters (``ñessus.example`` →
    ``xn--essus-nta.example``: requests encodes it so), or None when it has no such spelling. Targets are given in
    punycode, so a scanner's protected name must be compared in punycode too."""
    try:
        return idna.encode(host.lower(), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
