"""Scan targets: parse and normalise what users type, and check it against a pool's allow-list.

Targets are IPv4/IPv6 addresses, CIDR networks (``10.0.0.0/24``), address ranges
(``10.0.0.1-10.0.0.20`` or the Nessus short form ``10.0.0.1-20``) and host names. One target is
exactly one of these and can never carry another: Nessus splits its ``text_targets`` on commas and
white space, so a comma, a semicolon, any white space or control character, a non-ASCII character
or an IPv6 zone id (``%eth0``) inside a target is refused, and host names are checked with full
matches (a ``$`` would let ``"127.0.0.1\\n.example.com"`` through). :func:`check_text_targets`
re-checks the final string sent to the scanner, split the way the scanner splits it.

A pool's scope holds CIDRs, addresses, host names and ``*.domain`` patterns. An empty scope allows
nothing unless the pool says ``allow_any_target``. Protected targets — loopback, link-local and cloud
metadata addresses, unspecified addresses, ``localhost`` names and the scanners' own addresses and
host names — are refused even then, unless the scope lists them explicitly: an entry *inside* the
protected range (``127.0.0.1``, ``169.254.169.254``) or the exact host name; a wider entry such as
``0.0.0.0/0`` or ``*.example.com`` does not count.

Host names are matched by name only (never resolved: a DNS answer can change between the check and
the scan), so a host name is in scope only when the allow-list names it or one of its ``*.domain``
patterns covers it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings

from pools.protected import PROTECTED_NETWORKS, describe, is_protected_name
from pools.spellings import embedded_ipv4_problem, host_address, punycode_host

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A last label that resolvers (inet_aton) read as a number: "0x7f000001", "127.0.0.0x1", "2130706433".
_NUMERIC_LABEL_RE = re.compile(r"[0-9]+|0x[0-9a-f]*")
# A range whose sides look like addresses (IPv4 digits and dots, or IPv6 with a colon): a bad one is a bad range,
# not a host name. "face-bad.de" or "dead-beef" are host names.
_ADDRESS_LIKE_RE = re.compile(r"[0-9.]+|[0-9a-fA-F.]*:[0-9a-fA-F:.]*")
_SHORT_RANGE_RE = re.compile(r"(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})")
# How the scanner splits text_targets (Nessus: commas and white space, new lines included); ";" too, to be safe.
_ONE_TARGET = "give one address, CIDR, range or host name per target"


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
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):  # "10.0.0.300", "0x7f000001": a bad address, not a host name
        return None
    return name


def _character_problem(text: str) -> str | None:
    """Why ``text`` cannot be one target because of a character in it (smuggling, look-alikes), or None."""
    for char in text:
        if char in ",;":
            return f"contains {char!r}: {_ONE_TARGET} (a list item or a new line for each)"
        if char.isspace():
            return f"contains white space ({char!r}): {_ONE_TARGET}"
        if not char.isascii():
            return (f"contains the non-ASCII character {char!r} (U+{ord(char):04X}): write addresses in ASCII and "
                    "internationalised host names in punycode (xn--…)")
        if not char.isprintable():
            return f"contains the control character U+{ord(char):04X}: remove it"
    if "%" in text:
        return "has an IPv6 zone id (%…): zone ids are not allowed; give the address without it"
    return None


def parse_target(raw: object) -> Target:
    """Parse one target; raise :class:`TargetError` with a message that says how to fix it."""
    target = _parse_target(raw)
    problem = embedded_ipv4_problem(raw.strip(" ") if isinstance(raw, str) else target.text, target.networks)
    if problem:
        raise TargetError(problem)
    return target


def _parse_target(raw: object) -> Target:
    if not isinstance(raw, str):
        raise TargetError(f"{raw!r} is not a string: give an address, a CIDR, a range or a host name")
    text = raw.strip(" ")  # only spaces: a tab, a new line or a NUL anywhere is refused below
    if not text:
        raise TargetError("an empty target: remove it or give an address, a CIDR, a range or a host name")
    problem = _character_problem(text)
    if problem:
        raise TargetError(f"{text!r} {problem}")
    if "://" in text or text.startswith("/"):
        raise TargetError(f"{text!r} is not a target: give a bare address, CIDR, range or host name (no URL)")
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
            first, _, last = text.partition("-")
            if _ADDRESS_LIKE_RE.fullmatch(first) and _ADDRESS_LIKE_RE.fullmatch(last):
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
            "(letters, digits and '-' in dot-separated labels; IPv4 addresses in dotted decimal)"
        )
    return Target(text=name, hostname=name)


def _parse_range(text: str) -> Target:
    short = _SHORT_RANGE_RE.fullmatch(text)
    if short:
        first_text, last_text = short.group(1) + short.group(2), short.group(1) + short.group(3)
    else:
        first_text, _, last_text = text.partition("-")
    try:
        first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
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
    total = 0
    max_addresses = settings.SCANPOOL_MAX_TARGET_ADDRESSES
    for item in items:
        target = parse_target(item)
        if target.text in seen:
            continue
        seen[target.text] = target
        total += target.size
        if total > max_addresses:  # as soon as it is over: a long list of wide ranges costs no more to refuse
            more = " or more" if len(seen) < len(items) else ""
            raise TargetError(
                f"the targets cover {total}{more} addresses; at most {max_addresses} per scan: "
                "use smaller networks or split the scan"
            )
    return list(seen.values())


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
    problem = _character_problem(text)
    if problem:
        raise ScopeEntryError(f"{text!r} {problem}")
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
    """Why ``entry`` is not a valid allow-list entry (see :func:`parse_scope_entry`), or ``None``.

    Stricter than :func:`parse_scope_entry` (which reads stored rows, host bits allowed): a new entry with host bits
    set (``192.0.2.10/8``) is refused with the network it would mean, as a target is, so nobody widens a scope
    by a typo."""
    try:
        parsed = parse_scope_entry(entry)
    except ScopeEntryError as exc:
        return str(exc)
    if not isinstance(parsed, str) and "/" in str(entry):
        try:
            ipaddress.ip_network(str(entry).strip(), strict=True)
        except ValueError:
            return f"{str(entry).strip()!r} has host bits set: did you mean {parsed.with_prefixlen}?"
    return None


def _covered(net: IPNetwork, allowed: Iterable[IPNetwork]) -> bool:
    return any(net.version == a.version and net.subnet_of(a) for a in allowed)  # type: ignore[arg-type]


def _overlap(a: IPNetwork, b: IPNetwork) -> IPNetwork | None:
    if a.version != b.version or not a.overlaps(b):  # type: ignore[arg-type]
        return None
    return a if a.subnet_of(b) else b  # type: ignore[arg-type]


@dataclass(frozen=True)
class Scope:
    """A pool's allow-list, parsed once, with the targets it protects.

    ``unrestricted`` (the pool's ``allow_any_target``) allows every target that is not protected.
    ``entry_networks`` keeps the entries as written (before collapsing): only an entry inside a protected
    network lists part of it explicitly.
    """

    networks: tuple[IPNetwork, ...]
    hostnames: frozenset[str]
    domains: tuple[str, ...]  # "example.com" for "*.example.com"
    unrestricted: bool
    entry_networks: tuple[IPNetwork, ...] = ()
    protected_networks: tuple[IPNetwork, ...] = PROTECTED_NETWORKS
    protected_hostnames: frozenset[str] = frozenset()

    @classmethod
    def parse(
        cls, entries: Iterable[object] | None, *, allow_any: bool = False, protected_hosts: Iterable[str] = ()
    ) -> Scope:
        """Parse stored entries. An invalid one (only possible if the row was written around the admin form and the
        loader) allows nothing: a broken allow-list fails closed, never open. ``protected_hosts`` are further
        addresses or host names (the scanners') refused unless listed explicitly."""
        nets: list[IPNetwork] = []
        hostnames: set[str] = set()
        domains: list[str] = []
        for entry in list(entries or []):
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
        protected_nets, protected_names = list(PROTECTED_NETWORKS), set()
        for host in protected_hosts:
            host = host.strip().strip("[]").lower().rstrip(".")
            if not host.isascii():  # a scanner stored with a unicode host is reached at its punycode name
                host = (punycode_host(host) or host).rstrip(".")
            address = host_address(host)
            if address is not None:
                protected_nets.append(ipaddress.ip_network(address))
            elif host:
                protected_names.add(host)
        v4 = ipaddress.collapse_addresses(n for n in nets if n.version == 4)
        v6 = ipaddress.collapse_addresses(n for n in nets if n.version == 6)
        return cls(
            networks=(*v4, *v6),
            hostnames=frozenset(hostnames),
            domains=tuple(domains),
            unrestricted=allow_any,
            entry_networks=tuple(nets),
            protected_networks=tuple(protected_nets),
            protected_hostnames=frozenset(protected_names),
        )

    def refusal(self, target: Target) -> str | None:
        """Why the scope refuses ``target`` ("outside the scope", "protected: …"), or None when it allows it."""
        if target.hostname:
            return self._hostname_refusal(target.hostname)
        spans = [(n.version, int(n.network_address), int(n.broadcast_address)) for n in target.networks]
        for protected, explicit, low, high in self._guards:
            if not any(v == protected.version and first <= high and last >= low for v, first, last in spans):
                continue  # the usual case: nowhere near this protected network
            parts = [part for net in target.networks
                     if (part := _overlap(net, protected)) is not None and not _covered(part, explicit)]
            if parts:  # every part the scope would have to list, not only the first (a range spans several)
                listed = ", ".join(str(n) for n in ipaddress.collapse_addresses(parts))  # type: ignore[arg-type]
                return f"protected ({describe(protected)}; list {listed} in the scope to allow it)"
        if self.unrestricted or all(_covered(net, self.networks) for net in target.networks):
            return None
        return "outside the scope"

    @cached_property
    def _guards(self) -> tuple[tuple[IPNetwork, tuple[IPNetwork, ...], int, int], ...]:
        """Each protected network, the entries inside it (they allow that part), its first and last address as
        numbers: made once per scope, not per target."""
        return tuple((p, tuple(e for e in self.entry_networks if e.version == p.version and e.subnet_of(p)),  # type: ignore[arg-type]
                      int(p.network_address), int(p.broadcast_address)) for p in self.protected_networks)

    def _hostname_refusal(self, name: str) -> str | None:
        if name in self.protected_hostnames or is_protected_name(name):
            if name in self.hostnames:
                return None
            return f"protected (a local, metadata or scanner host name; list {name} in the scope to allow it)"
        if self.unrestricted or name in self.hostnames or any(name.endswith("." + d) for d in self.domains):
            return None
        return "outside the scope"

    def allows(self, target: Target) -> bool:
        return self.refusal(target) is None

    @property
    def allows_nothing(self) -> bool:
        return not self.unrestricted and not (self.networks or self.hostnames or self.domains)


def refusals(targets: Iterable[Target], scope: Scope) -> list[tuple[str, str]]:
    """``(target text, reason)`` for each target ``scope`` refuses; empty when all are allowed."""
    return [(t.text, why) for t in targets if (why := scope.refusal(t)) is not None]


def out_of_scope(
    targets: Iterable[Target], scope_entries: Iterable[object] | None, *, allow_any: bool = False
) -> list[str]:
    """The targets (as text) that the allow-list does not permit; empty when all are allowed."""
    scope = Scope.parse(scope_entries, allow_any=allow_any)
    return [text for text, _ in refusals(targets, scope)]
