"""manage.py load_scanners: a clear error (file, line, key, fix) for every kind of bad input, and nothing changed."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from pools.models import Pool
from scanners.models import Scanner
from scanners.validators import CA_BUNDLE_UNUSABLE
from tests.factories import PoolFactory, ScannerFactory
from tests.scanner_config_support import load, snapshot, write

pytestmark = pytest.mark.django_db

# ----------------------------------------------------------------------------------- bad input

ONE_POOL = """\
pools:
  - name: dmz
    scanners:
      - name: dmz-1
        url: https://dmz-1:8834
        username: admin
        password: admin
"""

BAD_INPUTS = {
    "bad_yaml": (
        "pools:\n  - name: dmz\n   scanners: [\n",
        [r"scanners\.yaml:3: invalid YAML, column \d+"],
    ),
    "unknown_key": (
        ONE_POOL.replace("url:", "ulr:"),
        [
            r"scanners\.yaml:5: pools\[0\]\.scanners\[0\]\.ulr: unknown key; did you mean url\?",
            r"scanners\.yaml:4: pools\[0\]\.scanners\[0\]: missing required key 'url'",
        ],
    ),
    "unknown_pool_key": (
        ONE_POOL.replace("  - name: dmz\n", "  - name: dmz\n    timeout: 24h\n"),
        [r"scanners\.yaml:3: pools\[0\]\.timeout: unknown key"],
    ),
    "missing_name": (
        ONE_POOL.replace("      - name: dmz-1\n        url", "      - url"),
        [r"scanners\.yaml:4: pools\[0\]\.scanners\[0\]: missing required key 'name'"],
    ),
    "missing_variable": (
        ONE_POOL.replace("password: admin", "password: ${SCANPOOL_TEST_UNSET_VAR}"),
        [
            r"scanners\.yaml:7: pools\[0\]\.scanners\[0\]\.password: "
            r"environment variable SCANPOOL_TEST_UNSET_VAR is not set"
        ],
    ),
    "bad_reference": (
        ONE_POOL.replace("password: admin", "password: ${not valid}"),
        [r"scanners\.yaml:7: .*invalid variable reference"],
    ),
    "duplicate_pool": (
        ONE_POOL + "  - name: dmz\n",
        [r"scanners\.yaml:8: duplicate pool name 'dmz' \(first on line 2\)"],
    ),
    "duplicate_scanner": (
        ONE_POOL
        + "  - name: lab\n    scanners:\n      - {name: dmz-1, url: 'https://x:1', username: a, password: b}\n",
        [r"scanners\.yaml:10: duplicate scanner name 'dmz-1' \(first on line 4, pool 'dmz'\)"],
    ),
    "duplicate_key": (
        ONE_POOL.replace("username: admin", "username: admin\n        username: root"),
        [r"scanners\.yaml:7: pools\[0\]\.scanners\[0\]\.username: duplicate key \(first given on line 6\)"],
    ),
    "invalid_url": (
        ONE_POOL.replace("https://dmz-1:8834", "dmz-1:8834"),
        [r"scanners\.yaml:5: pools\[0\]\.scanners\[0\]\.url: 'dmz-1:8834' must start with https://"],
    ),
    "max_concurrent_zero": (
        ONE_POOL + "        max_concurrent_scans: 0\n",
        [r"scanners\.yaml:8: pools\[0\]\.scanners\[0\]\.max_concurrent_scans: must be at least 1, got 0"],
    ),
    "no_credentials": (
        ONE_POOL.replace("        username: admin\n        password: admin\n", ""),
        [r"scanners\.yaml:4: pools\[0\]\.scanners\[0\]: scanner 'dmz-1': no credentials"],
    ),
    "half_api_keys": (
        ONE_POOL.replace("username: admin", "access_key: ak"),
        [r"secret_key is missing"],
    ),
    "bad_pool_name": (
        ONE_POOL.replace("name: dmz\n", "name: dmz zone\n"),
        [r"scanners\.yaml:2: pools\[0\]\.name: 'dmz zone' is not a valid name"],
    ),
    "bad_scope": (
        ONE_POOL.replace("  - name: dmz\n", "  - name: dmz\n    scope: [10.0.0.0/33]\n"),
        [r"scanners\.yaml:3: pools\[0\]\.scope: '10.0.0.0/33' is not a valid CIDR"],
    ),
    "bad_kind": (
        ONE_POOL.replace("url:", "kind: openvas\n        url:"),
        [r"unknown scanner kind 'openvas': supported kinds are nessus"],
    ),
    "empty_file": ("# nothing here\n", [r"scanners\.yaml: the file is empty"]),
    "not_a_list": ("pools: dmz\n", [r"scanners\.yaml:1: pools: expected a list of pools"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_and_changes_nothing(case, tmp_path, monkeypatch):
    monkeypatch.delenv("SCANPOOL_TEST_UNSET_VAR", raising=False)
    existing = ScannerFactory(name="kept", pool=PoolFactory(name="kept-pool"))
    before = snapshot()
    text, patterns = BAD_INPUTS[case]
    path = write(tmp_path, text)
    with pytest.raises(CommandError) as excinfo:
        load(path, "--prune")
    message = str(excinfo.value)
    assert message.startswith(f"{path}: nothing was changed"), message
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in:\n{message}"
    assert snapshot() == before
    assert Scanner.objects.get(pk=existing.pk).enabled


def test_a_valid_pool_next_to_an_invalid_one_is_not_created(tmp_path):
    text = ONE_POOL + "  - name: lab\n    scanners:\n      - {name: lab-1, url: 'nope', username: a, password: b}\n"
    with pytest.raises(CommandError, match=r"scanners\.yaml:10: pools\[1\]\.scanners\[0\]\.url"):
        load(write(tmp_path, text))
    assert not Pool.objects.exists() and not Scanner.objects.exists()


def test_a_scanner_that_belongs_to_another_pool_is_an_error(tmp_path):
    ScannerFactory(name="dmz-1", pool=PoolFactory(name="lab"))
    before = snapshot()
    with pytest.raises(
        CommandError, match=r"scanners\.yaml:4: scanner 'dmz-1' already belongs to pool 'lab', not 'dmz'"
    ):
        load(write(tmp_path, ONE_POOL))
    assert snapshot() == before


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match=r"missing\.yaml: nothing was changed:\n.*cannot read the file"):
        load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("kind", ["missing", "directory", "not_pem", "broken_pem", "relative"])
def test_an_unusable_ca_bundle_is_refused_with_one_message(tmp_path, kind):
    bundle = {
        "missing": tmp_path / "nonexistent.pem",
        "directory": tmp_path,
        "not_pem": tmp_path / "notes.txt",
        "broken_pem": tmp_path / "broken.pem",
        "relative": "ca.pem",
    }[kind]
    (tmp_path / "notes.txt").write_text("just text\n")
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = ONE_POOL + f"        verify_tls: {bundle}\n"
    with pytest.raises(CommandError) as caught:
        call_command("load_scanners", str(write(tmp_path, text)), stdout=io.StringIO(), stderr=io.StringIO())
    # One message whatever the reason: it must not tell whether the file exists.
    assert f"verify_tls: {CA_BUNDLE_UNUSABLE}" in str(caught.value)
    assert not Scanner.objects.exists()

