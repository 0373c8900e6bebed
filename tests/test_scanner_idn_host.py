"""A scanner URL whose host is an internationalised name (``https://ñessus.corp.example:8834``) is reached at its
punycode name (``xn--essus-nta.corp.example``: the HTTP client encodes it), and targets must be given in punycode.
So the scanners' protection compares the punycode name: a target naming a scanner's own API cannot pass by the other
spelling. New scanner URLs must write such a host in punycode (as targets do); rows stored before are protected at
their punycode name."""

from __future__ import annotations

import pytest

from pools.scope import Scope, parse_target
from scanners.validators import scanner_url_problem
from tasks.errors import SubmissionError
from tasks.models import ScanTask
from tasks.services import submit
from tests.factories import PoolFactory, ScannerFactory

IDN_URL = "https://ñessus.corp.example:8834"
PUNYCODE = "xn--essus-nta.corp.example"


def test_a_scanner_stored_with_a_unicode_host_is_protected_at_its_punycode_name(db):
    pool = PoolFactory(name="idn", scope=["*.corp.example"])
    ScannerFactory(pool=pool, name="idn-1", url=IDN_URL)  # a row stored before the URL rule (factories skip it)
    with pytest.raises(SubmissionError) as refused:
        submit(pool="idn", name="own api", targets=[PUNYCODE])
    assert refused.value.field == "targets" and "protected" in refused.value.message
    assert not ScanTask.objects.exists()
    scope = Scope.parse(["*.corp.example"], protected_hosts=["ñessus.corp.example", "NESSUS-2.corp.example."])
    assert scope.refusal(parse_target(PUNYCODE)).startswith("protected")
    assert scope.refusal(parse_target("nessus-2.corp.example")).startswith("protected")
    assert scope.refusal(parse_target("other.corp.example")) is None


@pytest.mark.parametrize(("url", "ascii_host"), [
    (IDN_URL, PUNYCODE), ("https://nessus\u3002corp.example:8834", None),
])
def test_a_scanner_url_must_write_its_host_in_ascii(url, ascii_host):
    problem = scanner_url_problem(url)
    assert problem is not None and "punycode" in problem
    if ascii_host:
        assert f"https://{ascii_host}:8834" in problem
