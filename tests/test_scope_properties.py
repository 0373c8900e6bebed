"""Property-based attack on the scope check: hypothesis builds target lists from addresses in and out of scope,
protected addresses, numeric host-name spellings and every separator or look-alike a smuggler would try, and
whatever the submit rules accept is checked against an oracle written here, independently of pools/scope.py:

* each accepted target is one plain token (nothing a scanner could split on or read differently);
* the line sent to the scanner splits back into exactly the accepted targets;
* every address an accepted target covers lies inside the scope, and none is protected (loopback, link-local,
  metadata, unspecified, the scanner's own address) unless the scope lists it explicitly;
* an accepted host name is covered by the scope's names, never names the scanning host, and is not something
  the C library's resolver reads as an address (``127.1``, ``0x7f000001``);
* the launch re-check (``check_text_targets``) agrees with the submit check.

Deterministic (``derandomize``): the same examples on every run, so CI never turns red on a new random draw.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pools.scanner_targets import check_text_targets, text_targets
from pools.scope import Scope, TargetError, normalise_targets, refusals

SCANNER = "10.20.30.40"
SCOPES = {
    "narrow": (["192.0.2.0/24", "2001:db8::/32", "*.example.com", "db.corp.test"], False),
    "any": ([], True),
    "wide": (["0.0.0.0/0", "::/0", "*.example.com"], False),
    "explicit": (["127.0.0.1", "192.0.2.0/24", "localhost"], False),
}
# The oracle's own list of what reaches the scanning host or a metadata service, IPv4-mapped forms included.
_PROTECTED_V4 = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16",
                                                    "100.100.100.200/32", f"{SCANNER}/32")]
_PROTECTED_V6 = ("::/128", "::1/128", "fe80::/10", "fd00:ec2::254/128")
PROTECTED = [*_PROTECTED_V4, *(ipaddress.ip_network(n) for n in _PROTECTED_V6),
             *(ipaddress.ip_network(f"::ffff:{n.network_address}/{96 + n.prefixlen}") for n in _PROTECTED_V4)]
LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata", "metadata.google.internal", "instance-data")

TOKEN = re.compile(r"[0-9a-z.:/-]+")  # the only characters an accepted target may hold
SHORT_RANGE = re.compile(r"(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})")

PIECES = [
    "192.0.2.1", "192.0.2.0/28", "192.0.2.5-20", "192.0.2.5-192.0.2.9", "192.0.2.250-192.0.3.1", "192.0.2.250-260",
    "192.0.2.0/24", "192.0.0.0/16", "10.0.0.1", "10.20.30.40", "10.20.30.0/24", "127.0.0.1", "127.1", "0.0.0.0",
    "0", "169.254.169.254", "100.100.100.200", "8.8.8.8", "0.0.0.0/0", "2001:db8::1", "2001:db8::/48", "2001:db9::1",
    "::1", "::", "::/0", "::ffff:127.0.0.1", "::ffff:192.0.2.1", "::ffff:7f00:1", "0:0:0:0:0:ffff:a9fe:a9fe",
    "fe80::1", "fd00:ec2::254", "[2001:db8::1]", "0x7f000001", "0x7f.1", "2130706433", "0177.0.0.1", "127.0.0.1.",
    "web.example.com", "example.com", "web.example.com.", "web.example.com.evil.org", "evilexample.com", "db.corp.test",
    "localhost", "api.localhost", "LOCALHOST", "metadata.google.internal", "192.0.2.1.evil.org", "x", "-", "/",
    "192.0.2.0/25", "2001:db8::1-2001:db8::5", "2001:DB8::A", "::ffff:192.0.2.0/120", "::ffff:127.0.0.0/104",
    "169.254.169.254/32", "127.0.0.0/31", "10.20.30.40/32", "10.20.30.41", "0000:0000::1", "0::ffff:127.0.0.1",
    "::ffff:0:0/96", "100.100.100.200/32", "100.64.0.0/10", "192.0.2.255-192.0.2.255", "127.0.0.1-127.0.0.1",
    "126.255.255.255-127.0.0.0", "2001:db8::-2001:db8::ffff", "fe80::-fe80::1", "a.b.example.com",
    "xn--wb-ulc.example.com",
]
SEPARATORS = ["", ",", ";", " ", "\t", "\n", "\r", "\x00", "\x0b", "\x0c", "\u00a0", "\u2028", "\u3000", "\u200b",
              "\ufeff", "%", "%eth0", "/", "-", ":", ".", "..", "@", "#", "\\", "|", "'", '"', "*", "?", "\uff0c",
              "\uff11", "\u0435", "\u0131", "://", "http://"]

plain = st.sampled_from(PIECES)
crafted = st.lists(st.one_of(plain, st.sampled_from(SEPARATORS), st.text(max_size=2)), min_size=1, max_size=5)
item = st.one_of(plain, plain, plain.map(str.upper), crafted.map("".join))  # mostly valid: more reach the scope
target_lists = st.one_of(st.lists(item, min_size=1, max_size=4), st.lists(item, min_size=1, max_size=2),
                         crafted.map("".join))


def _span(text: str) -> tuple[ipaddress._BaseAddress, ipaddress._BaseAddress] | None:
    """First and last address of an accepted target, computed here (None: a host name)."""
    if "/" in text:
        net = ipaddress.ip_network(text)
        return net[0], net[-1]
    if short := SHORT_RANGE.fullmatch(text):
        return ipaddress.ip_address(short[1] + short[2]), ipaddress.ip_address(short[1] + short[3])
    try:
        if text.count("-") == 1:
            first, last = text.split("-")
            return ipaddress.ip_address(first), ipaddress.ip_address(last)
        address = ipaddress.ip_address(text)
        return address, address
    except ValueError:
        return None


def _numeric_to_the_resolver(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _inside(first, last, net) -> bool:
    return first.version == net.version and net[0] <= first and last <= net[-1]


def _overlaps(first, last, net) -> bool:
    return first.version == net.version and not (last < net[0] or first > net[-1])


def _check_accepted(texts: list[str], entries: list[str], allow_any: bool) -> None:
    explicit = [ipaddress.ip_network(e) for e in entries if "*" not in e and not e[0].isalpha()
                and ipaddress.ip_network(e).num_addresses == 1]
    nets = [ipaddress.ip_network(e) for e in entries if "*" not in e and not e[0].isalpha()]
    names = {e for e in entries if e[0].isalpha()}
    domains = [e[2:] for e in entries if e.startswith("*.")]
    for text in texts:
        assert TOKEN.fullmatch(text), text
        span = _span(text)
        if span is None:  # a host name
            assert not _numeric_to_the_resolver(text), f"{text} is a host name that the C library reads as an address"
            local = text in LOCAL_NAMES or text.endswith(".localhost")
            assert not local or text in names, f"{text} names the scanning host"
            assert allow_any or text in names or any(text.endswith("." + d) for d in domains), text
            continue
        first, last = span
        assert first <= last, text
        for net in PROTECTED:
            if _overlaps(first, last, net):
                listed = [e for e in explicit if _inside(e[0], e[-1], net)]
                assert listed and all(any(_inside(a, a, e) for e in listed)
                                      for a in (first, last)), f"{text} reaches protected {net}"
        assert allow_any or any(_inside(first, last, n) for n in nets), f"{text} leaves the scope"


@settings(max_examples=3000, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(targets=target_lists, which=st.sampled_from(sorted(SCOPES)))
def test_whatever_submit_accepts_stays_inside_the_scope(targets, which):
    entries, allow_any = SCOPES[which]
    scope = Scope.parse(entries, allow_any=allow_any, protected_hosts=[SCANNER])
    try:
        parsed = normalise_targets(targets)
    except TargetError:
        event("refused: not a valid target")
        return
    accepted = not refusals(parsed, scope)
    event(f"{which}: {'accepted' if accepted else 'refused by the scope'}")
    line = text_targets(t.text for t in parsed)
    assert (check_text_targets(line, scope) == []) == accepted, (targets, line)  # launch agrees with submit
    if not accepted:
        return
    texts = [t.text for t in parsed]
    assert re.split(r"[^0-9a-z.:/-]+", line) == texts  # the scanner's line splits back into exactly these
    _check_accepted(texts, entries, allow_any)


def test_the_oracle_has_teeth():
    """The oracle above refuses what it must (else the property would pass whatever the scope code did)."""
    narrow, any_target, explicit = SCOPES["narrow"], SCOPES["any"], SCOPES["explicit"]
    for texts, (entries, allow_any) in [
        (["127.0.0.1"], narrow), (["10.20.30.40"], any_target), (["::ffff:127.0.0.1"], any_target),
        (["100.100.100.200"], any_target), (["127.0.0.0/31"], explicit), (["192.0.3.1"], narrow),
        (["192.0.2.250-192.0.3.1"], narrow), (["evil.org"], narrow), (["localhost"], any_target),
        (["2130706433"], any_target), (["a,b.example.com"], narrow), (["web.example.com\n"], narrow),
    ]:
        try:
            _check_accepted(texts, entries, allow_any)
        except AssertionError:
            continue
        raise AssertionError(f"the oracle let {texts} through")
    for texts, (entries, allow_any) in [
        (["192.0.2.1", "192.0.2.0/28", "2001:db8::1-2001:db8::5", "web.example.com", "db.corp.test"], narrow),
        (["127.0.0.1", "localhost", "192.0.2.5-192.0.2.9"], explicit), (["8.8.8.8", "evil.org"], any_target),
    ]:
        _check_accepted(texts, entries, allow_any)
