"""Targets no pool scans unless its scope lists them explicitly: the scanning host itself (loopback,
unspecified addresses, ``localhost`` names), link-local addresses and the cloud metadata services
behind them (169.254.169.254, fd00:ec2::254, Google Cloud's fd20:ce::254, Alibaba Cloud's 100.100.100.200,
``metadata.google.internal``), multicast and broadcast addresses (a scan of one reaches every host that listens).
IPv4-mapped IPv6 spellings (``::ffff:127.0.0.1``) are covered too (and refused as targets anyway: see
:func:`pools.scope.parse_target`). The scanners' own addresses are added per pool by the caller."""

from __future__ import annotations

import ipaddress

_V4 = {
    "0.0.0.0/8": "unspecified address (0.0.0.0 reaches the scanning host)",
    "127.0.0.0/8": "loopback address",
    "169.254.0.0/16": "link-local address, where cloud metadata services (169.254.169.254) live",
    "100.100.100.200/32": "cloud metadata service address (Alibaba Cloud)",
    "224.0.0.0/4": "multicast address (a scan reaches every host of the group)",
    "255.255.255.255/32": "broadcast address",
}
_V6 = {
    "::/128": "unspecified address",
    "::1/128": "loopback address",
    "fe80::/10": "link-local address",
    "fd00:ec2::254/128": "cloud metadata service address (AWS)",
    "fd20:ce::254/128": "cloud metadata service address (Google Cloud)",
    "ff00::/8": "multicast address (a scan reaches every host of the group)",
}
_DESCRIPTIONS: dict[str, str] = {**_V4, **_V6}
for _cidr, _why in _V4.items():  # ::ffff:127.0.0.1 is 127.0.0.1
    _net = ipaddress.ip_network(_cidr)
    _mapped = ipaddress.ip_network(f"::ffff:{_net.network_address}/{96 + _net.prefixlen}")
    _DESCRIPTIONS[str(_mapped)] = f"IPv4-mapped {_why}"

PROTECTED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(cidr) for cidr in _DESCRIPTIONS
)
# The loopback and multicast names of the usual /etc/hosts files (Debian, RHEL, Amazon Linux) and the metadata names.
PROTECTED_NAMES = frozenset({"localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4",
                             "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback",
                             "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
                             "metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})


def is_protected_name(name: str) -> bool:
    """Host names that always mean the scanning host or a metadata service (``*.localhost`` included)."""
    return name in PROTECTED_NAMES or name.endswith(".localhost")


def describe(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """Why ``net`` is protected, in words."""
    return _DESCRIPTIONS.get(str(net), f"an address of a scanner ({net.network_address})")
