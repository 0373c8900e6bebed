"""Scan targets: parse and normalise what users type, and check it against a pool's allow-list.

Targets are IPv4/IPv6 addresses, CIDR networks (``10.0.0.0/24``), address ranges
(``10.0.0.1-10.0.0.20`` or the Nessus short form ``10.0.0.1-20``) and host names. A pool's scope
holds CIDRs, addresses, host names and ``*.domain`` patterns; an empty scope allows everything.

Host names are matched by name only (never resolved: a DNS answer can change between the check and
the scan), so a host name is in scope only when the allow-list names it or one of its ``*.domain``
patterns covers it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_RANGE_LIKE_RE = re.compile(r"^[0-9a-fA-F:.]+-[0-9a-fA-F:.]+$")
_SHORT_RANGE_RE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")


class TargetError(ValueError):
    """One target is not valid; ``str()`` says which and how to fix it."""


@dataclass(frozen=True)
class Target:
    """One normalised target. ``networks`` covers its addresses; empty for a host name."""

    text: str
    networks: tuple[IPNetwork, ...] = ()
    hostname: str = ""

    @property
    def size(self) -> int:
        return sum(net.num_addresses for net in self.networks) if self.networks else 1


def _hostname(text: str) -> str | None:
    name = text.lower().rstrip(".")
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # "10.0.0.300" is a bad address, not a host name
        return None
    return name


def parse_target(raw: object) -> Target:
    """Parse one target; raise :class:`TargetError` with a message that says how to fix it."""
    if not isinstance(raw, str):
        raise TargetError(f"{raw!r} is not a string: give an address, a CIDR, a range or a host name")
    text = raw.strip()
    if not text:
        raise TargetError("an empty target: remove it or give an address, a CIDR, a range or a host name")
    if "://" in text or text.startswith("/") or " " in text:
        raise TargetError(
            f"{text!r} is not a target: give a bare address, CIDR, range or host name (no URL, no spaces)"
        )
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise TargetError(f"{text!r} is not a valid CIDR network (e.g. 10.0.0.0/24): {exc}") from None
            raise TargetError(f"{text!r} has host bits set: did you mean {loose.with_prefixlen}?") from None
        return Target(text=net.with_prefixlen, networks=(net,))
    if "-" in text:
        try:
            return _parse_range(text)
        except TargetError:
            if _RANGE_LIKE_RE.match(text):
                raise
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return Target(text=str(addr), networks=(ipaddress.ip_network(addr),))
    name = _hostname(text)
    if name is None:
        raise TargetError(
            f"{text!r} is not an IP address, a CIDR network, an address range or a valid host name "
            "(letters, digits and '-' in dot-separated labels)"
        )
    return Target(text=name, hostname=name)


def _parse_range(text: str) -> Target:
    short = _SHORT_RANGE_RE.match(text)
    if short:
        first_text, last_text = short.group(1) + short.group(2), short.group(1) + short.group(3)
    else:
        first_text, _, last_text = text.partition("-")
    try:
        first, last = ipaddress.ip_address(first_text.strip()), ipaddress.ip_address(last_text.strip())
    except ValueError:
        raise TargetError(
            f"{text!r} is not a valid address range: use 10.0.0.1-10.0.0.20 or 10.0.0.1-20"
        ) from None
    if first.version != last.version:
        raise TargetError(f"{text!r} mixes IPv4 and IPv6 addresses")
    if last < first:
        raise TargetError(f"{text!r} ends before it starts: put the lower address first")
    networks = tuple(ipaddress.summarize_address_range(first, last))  # type: ignore[arg-type]
    return Target(text=f"{first}-{last}", networks=networks)


def split_entries(text: str) -> list[str]:
    """Entries typed in one text box (targets, scope): separated by commas, spaces or new lines."""
    return [part for part in re.split(r"[,\s]+", text) if part]


def normalise_targets(raw: object) -> list[Target]:
    """Parse a list of targets (or one comma/whitespace separated string); dedupe, keep order."""
    if isinstance(raw, str):
        items: list[object] = list(split_entries(raw))
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise TargetError("targets must be a list of strings (addresses, CIDRs, ranges, host names)")
    if not items:
        raise TargetError("no targets given: name at least one address, CIDR, range or host name")
    limit = settings.SCANPOOL_MAX_TARGETS
    if len(items) > limit:
        raise TargetError(f"{len(items)} targets given; at most {limit} per scan: split the scan")
    seen: dict[str, Target] = {}
    for item in items:
        target = parse_target(item)
        seen.setdefault(target.text, target)
    targets = list(seen.values())
    total = sum(t.size for t in targets)
    max_addresses = settings.SCANPOOL_MAX_TARGET_ADDRESSES
    if total > max_addresses:
        raise TargetError(
            f"the targets cover {total} addresses; at most {max_addresses} per scan: "
            "use smaller networks or split the scan"
        )
    return targets


# ------------------------------------------------------------------------------------------ scope


class ScopeEntryError(ValueError):
    """One allow-list entry is not valid; ``str()`` says which and how to fix it."""


def parse_scope_entry(entry: object) -> IPNetwork | str:
    """One allow-list entry as a network, a host name, or ``"*.domain"`` (lower case).

    The one rule for scope entries, used by the pool admin form, the YAML loader and :class:`Scope`:
    a CIDR (host bits allowed), an IP address, a host name, or ``*.`` followed by a host name.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise ScopeEntryError(f"{entry!r} is not a non-empty string: give a CIDR, an address, a host name or *.domain")
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    if "/" in text:
        raise ScopeEntryError(f"{text!r} is not a valid CIDR network (e.g. 10.20.0.0/16)")
    wildcard = text.startswith("*.")
    name = _hostname(text[2:] if wildcard else text)
    if name is None:
        raise ScopeEntryError(
            f"{text!r} is not a CIDR, an IP address, a host name or a *.domain pattern "
            "(letters, digits and '-' in dot-separated labels)"
        )
    return f"*.{name}" if wildcard else name


def scope_entry_problem(entry: object) -> str | None:
    """Why ``entry`` is not a valid allow-list entry (see :func:`parse_scope_entry`), or ``None``."""
    try:
        parse_scope_entry(entry)
    except ScopeEntryError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Scope:
    """A pool's allow-list, parsed once."""

    networks: tuple[IPNetwork, ...]
    hostnames: frozenset[str]
    domains: tuple[str, ...]  # "example.com" for "*.example.com"
    unrestricted: bool

    @classmethod
    def parse(cls, entries: Iterable[object] | None) -> Scope:
        """Parse stored entries. An invalid one (only possible if the row was written around the admin form and the
        loader) allows nothing: a broken allow-list fails closed, never open."""
        entries = list(entries or [])
        nets: list[IPNetwork] = []
        hostnames: set[str] = set()
        domains: list[str] = []
        for entry in entries:
            try:
                parsed = parse_scope_entry(entry)
            except ScopeEntryError:
                continue
            if isinstance(parsed, str) and parsed.startswith("*."):
                domains.append(parsed[2:])
            elif isinstance(parsed, str):
                hostnames.add(parsed)
            else:
                nets.append(parsed)
        v4 = ipaddress.collapse_addresses(n for n in nets if n.version == 4)
        v6 = ipaddress.collapse_addresses(n for n in nets if n.version == 6)
        return cls(
            networks=(*v4, *v6),
            hostnames=frozenset(hostnames),
            domains=tuple(domains),
            unrestricted=not entries,
        )

    def allows(self, target: Target) -> bool:
        if self.unrestricted:
            return True
        if target.hostname:
            name = target.hostname
            return name in self.hostnames or any(name.endswith("." + domain) for domain in self.domains)
        return all(self._covers(net) for net in target.networks)

    def _covers(self, net: IPNetwork) -> bool:
        return any(net.version == allowed.version and net.subnet_of(allowed) for allowed in self.networks)  # type: ignore[arg-type]


def out_of_scope(targets: Iterable[Target], scope_entries: Iterable[object] | None) -> list[str]:
    """The targets (as text) that the allow-list does not permit; empty when all are allowed."""
    scope = Scope.parse(scope_entries)
    return [t.text for t in targets if not scope.allows(t)]
