"""One rule for pool allow-list entries (``pools.scope.parse_scope_entry``): the admin form, the YAML loader and
the scope check at submit accept and refuse the same entries, with the same message."""

from __future__ import annotations

import pytest

from pools.forms import ScopeField
from pools.scope import Scope, ScopeEntryError, parse_scope_entry, parse_target, scope_entry_problem
from scanners.config import ConfigError, parse_config

GOOD = ["10.20.0.0/16", "10.0.0.0/24", "192.0.2.7", "2001:db8::/32", "host-1.example.com", "*.DMZ.Example.com"]
BAD = ["10.0.0.0/33", "10.0.0.300", "not a host!", "-x.example.com", "*.", "bad_name.example.com", ""]


def _yaml(scope: list[str]) -> str:
    entries = ", ".join(f'"{s}"' for s in scope)
    return f"pools:\n  - name: p\n    scope: [{entries}]\n    scanners: []\n"


@pytest.mark.parametrize("entry", GOOD)
def test_valid_entries_pass_everywhere(entry):
    assert scope_entry_problem(entry) is None
    assert ScopeField(required=False).clean(entry) == [entry]
    assert parse_config(_yaml([entry])).pools[0].scope == (entry,)


@pytest.mark.parametrize("entry", BAD)
def test_invalid_entries_fail_everywhere_with_one_message(entry):
    with pytest.raises(ScopeEntryError) as caught:
        parse_scope_entry(entry)
    message = str(caught.value)
    assert scope_entry_problem(entry) == message
    if entry.strip():  # the form splits on blanks: an empty line is no entry there
        from django import forms

        with pytest.raises(forms.ValidationError) as form_error:
            ScopeField(required=False).validate([entry])
        assert form_error.value.messages == [message]
    with pytest.raises(ConfigError) as config_error:
        parse_config(_yaml([entry]))
    assert message in str(config_error.value)


def test_host_bits_are_refused_everywhere_a_scope_is_written():
    """``10.0.0.1/24`` would mean 10.0.0.0/24: the admin form and scanners.yaml refuse it and say so."""
    from django import forms

    message = "'10.0.0.1/24' has host bits set: did you mean 10.0.0.0/24?"
    assert scope_entry_problem("10.0.0.1/24") == message
    with pytest.raises(forms.ValidationError) as form_error:
        ScopeField(required=False).validate(["10.0.0.1/24"])
    assert form_error.value.messages == [message]
    with pytest.raises(ConfigError) as config_error:
        parse_config(_yaml(["10.0.0.1/24"]))
    assert message in str(config_error.value)


def test_scope_matches_what_the_rule_parses():
    scope = Scope.parse(["10.20.0.0/16", "*.DMZ.Example.com", "Host-1.example.com."])
    assert scope.allows(parse_target("10.20.3.0/24"))
    assert scope.allows(parse_target("web.dmz.example.com"))
    assert scope.allows(parse_target("host-1.example.com"))
    assert not scope.allows(parse_target("dmz.example.com"))
    assert not scope.allows(parse_target("10.21.0.1"))


def test_a_broken_stored_allow_list_allows_nothing():
    scope = Scope.parse(["not a host!"])
    assert not scope.unrestricted
    assert not scope.allows(parse_target("10.0.0.1")) and not scope.allows(parse_target("example.com"))
