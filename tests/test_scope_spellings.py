"""The other spellings of an address cannot pass the scope or the scanners' protection: an IPv4 address written as
IPv6 (mapped ``::ffff:a.b.c.d`` or compatible ``::a.b.c.d``) is refused as a target, whatever the scope; a scanner URL
whose host is an IPv4 address in a notation the C library also reads (``167837962``, ``0x0a09090b``, ``10.9.2316``)
is refused, and one stored before that rule is still protected at its real address. Also: host names that look
like ranges, scope entries with host bits, and the cost of refusing a long list of wide ranges."""

from __future__ import annotations

import ipaddress
import re

import pytest

from pools.scope import Scope, TargetError, normalise_targets, parse_target, scope_entry_problem
from scanners.validators import scanner_url_problem
from tasks.errors import SubmissionError
from tasks.models import ScanTask
from tasks.services import submit
from tests.factories import PoolFactory, ScannerFactory


@pytest.mark.parametrize(("target", "ipv4"), [
    ("::ffff:8.8.8.8", "8.8.8.8"), ("::ffff:808:808", "8.8.8.8"), ("0:0:0:0:0:ffff:a09:909", "10.9.9.9"),
    ("::7f00:1", "127.0.0.1"), ("::10.9.9.9", "10.9.9.9"),
])
def test_an_ipv4_address_written_as_ipv6_is_refused_naming_the_ipv4_spelling(target, ipv4):
    with pytest.raises(TargetError, match=re.escape(f"give {ipv4}")):
        parse_target(target)


@pytest.mark.parametrize("target", ["::ffff:0:0/96", "::ffff:10.0.0.0/120", "::/64",
                                    "::ffff:10.0.0.1-::ffff:10.0.0.9", "::1-::ffff"])
def test_networks_and_ranges_holding_ipv4_spellings_are_refused(target):
    with pytest.raises(TargetError, match="IPv4 targets in IPv4 notation"):
        parse_target(target)


def test_an_ipv6_scope_does_not_open_ipv4_through_mapped_addresses(db):
    PoolFactory(name="v6", scope=["10.20.0.0/16", "::/0"])
    pool = PoolFactory(name="open", scope=[], allow_any_target=True)
    ScannerFactory(pool=pool, name="s", url="https://10.9.9.9:8834")
    for pool_name, target in (("v6", "::ffff:8.8.8.8"), ("open", "::ffff:10.9.9.9"), ("open", "::a09:909")):
        with pytest.raises(SubmissionError) as info:
            submit(pool=pool_name, name="n", targets=[target])
        assert info.value.field == "targets"
        assert "written as IPv6" in info.value.message or "IPv4-compatible" in info.value.message
    assert ScanTask.objects.count() == 0
    assert submit(pool="v6", name="n", targets=["2001:db8::1", "10.20.0.5"]).targets == ["2001:db8::1", "10.20.0.5"]


@pytest.mark.parametrize(("url", "plain"), [
    ("https://167837962:8834", "10.1.1.10"), ("https://0x0a09090b:8834", "10.9.9.11"),
    ("https://10.9.2316:8834", "10.9.9.12"), ("https://010.0.0.1:8834", "8.0.0.1"),
    ("https://[::ffff:10.9.9.13]:8834", "10.9.9.13"),
])
def test_a_scanner_url_must_write_its_ipv4_address_plainly(url, plain):
    assert f"write it as {plain}" in scanner_url_problem(url)


@pytest.mark.parametrize("url", ["https://10.9.9.9:8834", "https://[2001:db8::1]:8834", "https://scanner-1:8834",
                                 "https://dead:8834", "https://1e100.example:8834"])
def test_plain_scanner_urls_stay_valid(url):
    assert scanner_url_problem(url) is None


def test_a_scanner_stored_with_another_notation_is_protected_at_its_real_address():
    scope = Scope.parse([], allow_any=True, protected_hosts=["167837962", "0x0a09090b", "10.9.2316",
                                                             "[::ffff:10.9.9.13]"])
    for address in ("10.1.1.10", "10.9.9.11", "10.9.9.12", "10.9.9.13", "10.9.9.0/24"):
        assert scope.refusal(parse_target(address)).startswith("protected"), address
    assert scope.refusal(parse_target("10.9.8.1")) is None


@pytest.mark.parametrize("name", ["face-bad.de", "a1-b2.cc", "be-ad.be", "dead-beef"])
def test_host_names_of_hex_letters_with_a_hyphen_are_host_names(name):
    assert parse_target(name).hostname == name


@pytest.mark.parametrize("text", ["10.0.0.1-10.0.0.300", "10.0.0.9-10.0.0.1", "2001:db8::1-2001:db8::zz"])
def test_bad_ranges_are_still_named_as_ranges(text):
    with pytest.raises(TargetError):
        parse_target(text)


def test_a_scope_entry_with_host_bits_is_refused_with_the_network_it_would_mean():
    assert scope_entry_problem("192.0.2.10/8") == "'192.0.2.10/8' has host bits set: did you mean 192.0.0.0/8?"
    assert scope_entry_problem("2001:db8::1/32").endswith("did you mean 2001:db8::/32?")
    assert scope_entry_problem("192.0.0.0/8") is None and scope_entry_problem("192.0.2.10") is None
    # A row stored before the rule keeps meaning what it meant (the whole network), not nothing.
    assert Scope.parse(["192.0.2.10/8"]).networks == (ipaddress.ip_network("192.0.0.0/8"),)


def test_a_long_list_of_wide_ranges_is_refused_after_the_first_ones(monkeypatch, settings):
    """1,000 IPv6 ranges of 2^80 addresses each cost seconds of CPU when each was summarised before the address
    count was checked; the count is now checked as the list is read."""
    summarised = 0
    real = ipaddress.summarize_address_range

    def counting(first, last):
        nonlocal summarised
        summarised += 1
        return real(first, last)

    monkeypatch.setattr(ipaddress, "summarize_address_range", counting)
    targets = [f"2001:db8:{i:x}::1-2001:db8:{i:x}:ffff:ffff:ffff:ffff:fffe" for i in range(1000)]
    with pytest.raises(TargetError, match="or more addresses; at most"):
        normalise_targets(targets)
    assert summarised == 1


def test_the_advice_for_a_protected_range_lists_every_part_to_allow():
    scope = Scope.parse([], allow_any=True)
    why = scope.refusal(parse_target("fe80::1-fe80::5"))
    assert "list fe80::1/128, fe80::2/127, fe80::4/127 in the scope" in why
    # Listing what it says does allow it.
    listed = Scope.parse(["fe80::1/128", "fe80::2/127", "fe80::4/127"], allow_any=True)
    assert listed.refusal(parse_target("fe80::1-fe80::5")) is None
