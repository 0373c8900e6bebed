"""Targets no pool scans unless its scope lists them explicitly: the scanning host itself (loopback,
unspecified addresses, ``localhost`` names), link-local addresses and the cloud metadata services
behind them (169.254.169.254, fd00:ec2::254, Alibaba Cloud's 100.100.100.200, ``metadata.google.internal``).
IPv4-mapped IPv6 spellings (``::ffff:127.0.0.1``) are covered too. The scanners' own addresses are added per
pool by the caller."""

from __future__ import annotations

import ipaddress

_V4 = {
    "0.0.0.0/8": "unspecified address (0.0.0.0 reaches the scanning host)",
    "127.0.0.0/8": "loopback address",
    "169.254.0.0/16": "link-local address, where cloud metadata services (169.254.169.254) live",
    "100.100.100.200/32": "cloud metadata service address (Alibaba Cloud)",
}
_V6 = {
    "::/128": "unspecified address",
    "::1/128": "loopback address",
    "fe80::/10": "link-local address",
    "fd00:ec2::254/128": "cloud metadata service address",
}
_DESCRIPTIONS: dict[str, str] = {**_V4, **_V6}
for _cidr, _why in _V4.items():  # ::ffff:127.0.0.1 is 127.0.0.1
    _net = ipaddress.ip_network(_cidr)
    _mapped = ipaddress.ip_network(f"::ffff:{_net.network_address}/{96 + _net.prefixlen}")
    _DESCRIPTIONS[str(_mapped)] = f"IPv4-mapped {_why}"

PROTECTED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(cidr) for cidr in _DESCRIPTIONS
)
PROTECTED_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
                             "metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})


def is_protected_name(name: str) -> bool:
    """Host names that always mean the scanning host or a metadata service (``*.localhost`` included)."""
    return name in PROTECTED_NAMES or name.endswith(".localhost")


def describe(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """Why ``net`` is protected, in words."""
    return _DESCRIPTIONS.get(str(net), f"an address of a scanner ({net.network_address})")
