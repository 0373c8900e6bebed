"""manage.py load_scanners / export_scanners: the DESIGN §9 YAML, idempotent upsert, prune, dry run,
the seed system's older format, the export round trip, and a clear error for every kind of bad input."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from pools.models import Pool
from scanners.config import parse_duration, read_config, secret_variable
from scanners.models import BreakerState, Health, Scanner
from tests.factories import PoolFactory, ScannerFactory
from tests.scanner_config_support import load, snapshot, write

pytestmark = pytest.mark.django_db

DESIGN_EXAMPLE = """\
pools:
  - name: nessus_dmz                # slug; the queue name derives from it
    description: DMZ scanners
    scope: ["10.20.0.0/16", "192.0.2.0/24", "*.dmz.example.com"]   # allow-list; empty = no restriction
    max_queued: 500                 # backpressure limit (0 = none)
    scan_timeout: 24h               # per-task hard deadline default
    poll_interval: 30s
    scanners:
      - name: dmz-scanner1          # the scanner_instance users pin
        kind: nessus
        url: https://dmz-scanner:8834
        access_key: ${DMZ_ACCESS_KEY}         # either API keys ...
        secret_key: ${DMZ_SECRET_KEY}
        # username: ${DMZ_USER}               # ... or a session login
        # password: ${DMZ_PASSWORD:-changeme}
        verify_tls: true            # true | false | path to a CA bundle
        max_concurrent_scans: 3
        enabled: true
      - name: dmz-scanner2
        url: https://dmz-scanner2:8834/
        username: ${DMZ_USER:-nessus}
        password: ${DMZ_PASSWORD:-changeme}
        verify_tls: CA_BUNDLE_PATH
  - name: lab
    scan_timeout: 90m
    poll_interval: 5
    scanners:
      - name: lab-1
        url: http://127.0.0.1:8834
        allow_plain_http: true      # plain http:// must be allowed explicitly
        username: admin
        password: "pa$${literal}"
        verify_tls: false
"""


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("DMZ_ACCESS_KEY", "ak-from-env")
    monkeypatch.setenv("DMZ_SECRET_KEY", "sk-from-env")
    monkeypatch.delenv("DMZ_USER", raising=False)
    monkeypatch.delenv("DMZ_PASSWORD", raising=False)
    return monkeypatch


@pytest.fixture
def ca_bundle(tmp_path) -> Path:
    from scanners.emulator.tls import ensure_certificate

    return ensure_certificate(tmp_path / "dmz-ca")[0]  # a real PEM certificate (a CA bundle must parse)



def test_design_example_loads(tmp_path, env, ca_bundle):
    path = write(tmp_path, DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle)))
    output = load(path)
    assert "5 objects: 5 create, 0 update, 0 disable, 0 unchanged (applied)" in output

    dmz = Pool.objects.get(name="nessus_dmz")
    assert dmz.description == "DMZ scanners"
    assert dmz.scope == ["10.20.0.0/16", "192.0.2.0/24", "*.dmz.example.com"]
    assert (dmz.max_queued, dmz.scan_timeout_seconds, dmz.poll_interval_seconds) == (500, 86400, 30)
    lab = Pool.objects.get(name="lab")
    assert (lab.scan_timeout_seconds, lab.poll_interval_seconds, lab.scope, lab.max_queued) == (5400, 5, [], 0)

    s1 = Scanner.objects.get(name="dmz-scanner1")
    assert (s1.pool, s1.url, s1.access_key, s1.secret_key, s1.max_concurrent_scans) == (
        dmz,
        "https://dmz-scanner:8834",
        "ak-from-env",
        "sk-from-env",
        3,
    )
    assert (s1.verify_tls, s1.ca_bundle, s1.enabled, s1.auth_mode) == (True, "", True, "api_keys")
    s2 = Scanner.objects.get(name="dmz-scanner2")
    assert (s2.url, s2.username, s2.password) == ("https://dmz-scanner2:8834", "nessus", "changeme")  # defaults
    assert (s2.verify_tls, s2.ca_bundle, s2.max_concurrent_scans) == (True, str(ca_bundle), 1)
    lab1 = Scanner.objects.get(name="lab-1")
    assert (lab1.verify_tls, lab1.password) == (False, "pa${literal}")  # $${ is a literal ${


def test_loading_twice_changes_nothing(tmp_path, env, ca_bundle):
    path = write(tmp_path, DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle)))
    load(path)
    before = snapshot()
    updated = dict(Scanner.objects.values_list("name", "updated_at"))
    output = load(path)
    assert "0 create, 0 update, 0 disable, 5 unchanged" in output
    assert snapshot() == before
    assert dict(Scanner.objects.values_list("name", "updated_at")) == updated


def test_update_touches_only_configuration_columns(tmp_path, env, ca_bundle):
    text = DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle))
    load(write(tmp_path, text))
    # Workers maintain these on the same row; a reload must not reset them.
    Scanner.objects.filter(name="dmz-scanner1").update(
        active_scans=2, health=Health.READY, breaker_state=BreakerState.OPEN, consecutive_failures=5
    )
    env.setenv("DMZ_ACCESS_KEY", "ak-rotated")
    output = load(write(tmp_path, text.replace("max_concurrent_scans: 3", "max_concurrent_scans: 4")))
    assert "update    scanner dmz-scanner1 (pool nessus_dmz): access_key, max_concurrent_scans" in output
    s1 = Scanner.objects.get(name="dmz-scanner1")
    assert (s1.max_concurrent_scans, s1.access_key) == (4, "ak-rotated")
    assert (s1.active_scans, s1.health, s1.breaker_state, s1.consecutive_failures) == (2, "ready", "open", 5)


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path, env, ca_bundle):
    path = write(tmp_path, DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle)))
    output = load(path, "--dry-run")
    assert "would create    pool nessus_dmz" in output
    assert "would create    scanner dmz-scanner1 (pool nessus_dmz)" in output
    assert "dry run, nothing changed" in output
    assert not Pool.objects.exists() and not Scanner.objects.exists()


def test_dry_run_lists_unchanged_objects_as_unchanged(tmp_path, env, ca_bundle):
    path = write(tmp_path, DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle)))
    load(path)
    output = load(path, "--dry-run", "-v", "2")
    assert "\nunchanged pool nessus_dmz" in "\n" + output  # not "would unchanged"
    assert "would unchanged" not in output


def test_prune_disables_what_the_file_no_longer_lists_and_deletes_nothing(tmp_path, env, ca_bundle):
    old_pool = PoolFactory(name="retired")
    old_scanner = ScannerFactory(name="retired-1", pool=old_pool)
    path = write(tmp_path, DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle)))
    load(path)
    dmz_only = DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle)).split("  - name: lab\n")[0]
    lab_only = write(tmp_path, dmz_only, "dmz-only.yaml")

    load(lab_only)  # without --prune nothing is disabled
    assert Pool.objects.get(name="lab").enabled and Scanner.objects.get(name="lab-1").enabled

    output = load(lab_only, "--prune")
    assert "disable   pool lab: enabled" in output
    assert "disable   scanner lab-1 (pool lab): enabled" in output
    assert "disable   pool retired: enabled" in output
    assert set(Pool.objects.filter(enabled=False).values_list("name", flat=True)) == {"lab", "retired"}
    assert set(Scanner.objects.filter(enabled=False).values_list("name", flat=True)) == {"lab-1", "retired-1"}
    assert Pool.objects.count() == 3 and Scanner.objects.filter(pk=old_scanner.pk).exists()


def test_the_seed_systems_older_format_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("NESSUS_PASSWORD", "from-env")
    path = write(
        tmp_path,
        """\
        # The older format: <pool>: [scanners], instance_id is the scanner name.
        nessus:
          - instance_id: local
            name: "Local Nessus Scanner"
            url: https://vpn-gateway:8834
            username: ${NESSUS_USERNAME:-nessus}
            password: ${NESSUS_PASSWORD:-nessus}
            enabled: true
            max_concurrent_scans: 10
        nessus_dmz:
          - instance_id: dmz-1
            url: https://dmz-1:8834
            username: nessus
            password: pw
        """,
    )
    output = load(path)
    assert "older '<pool>: [scanners]' format" in output
    local = Scanner.objects.get(name="local")
    assert (local.pool.name, local.description, local.url) == (
        "nessus",
        "Local Nessus Scanner",
        "https://vpn-gateway:8834",
    )
    assert (local.username, local.password, local.max_concurrent_scans) == ("nessus", "from-env", 10)
    assert Scanner.objects.get(name="dmz-1").max_concurrent_scans == 2  # the seed system's default


def test_export_round_trips(tmp_path, env, ca_bundle):
    load(write(tmp_path, DESIGN_EXAMPLE.replace("CA_BUNDLE_PATH", str(ca_bundle))))
    Scanner.objects.filter(name="lab-1").update(enabled=False, description="bench scanner")
    before = snapshot()

    exported = tmp_path / "export.yaml"
    call_command("export_scanners", "--output", str(exported), stderr=io.StringIO())
    text = exported.read_text()
    for secret in ("ak-from-env", "sk-from-env", "changeme", "pa${literal}"):
        assert secret not in text
    assert "${DMZ_SCANNER2_PASSWORD}" in text and "#   DMZ_SCANNER1_ACCESS_KEY" in text
    assert text.count("allow_plain_http: true") == 1  # lab-1's explicit permission survives the round trip

    stdout = io.StringIO()
    call_command("export_scanners", stdout=stdout)
    assert stdout.getvalue().split("\n", 1)[1] == text.split("\n", 1)[1]  # same document (after the dated line)

    # Loading the export without its variables fails cleanly, naming them.
    with pytest.raises(CommandError, match="DMZ_SCANNER1_ACCESS_KEY is not set"):
        load(exported)

    # With the secrets in the environment it loads back onto the same database unchanged ...
    for name, field, value in [
        ("dmz-scanner1", "access_key", "ak-from-env"),
        ("dmz-scanner1", "secret_key", "sk-from-env"),
        ("dmz-scanner2", "password", "changeme"),
        ("lab-1", "password", "pa${literal}"),
    ]:
        env.setenv(secret_variable(name, field), value)
    assert "0 create, 0 update, 0 disable, 5 unchanged" in load(exported)
    assert snapshot() == before

    # ... and onto an empty one, identically.
    Scanner.objects.all().delete()
    Pool.objects.all().delete()
    load(exported)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(3600, 3600), ("3600", 3600), ("30s", 30), ("90m", 5400), ("24h", 86400), ("2d", 172800), ("1h30m", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["24x", "h", "-5", "0", "1.5h", True, "", "30 seconds"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)



def test_the_shipped_docker_example_is_valid(monkeypatch):
    for name in ("DMZ_ACCESS_KEY", "DMZ_SECRET_KEY", "INTERNAL_PASSWORD"):
        monkeypatch.setenv(name, "x")
    config = read_config(Path(__file__).resolve().parent.parent / "docker" / "scanners.example.yaml")
    compose = (Path(__file__).resolve().parent.parent / "docker" / "docker-compose.yml").read_text()
    # Every pool of the example has its worker in the compose file (the default of its WORKER_*_POOLS variable).
    served = {p for value in re.findall(r"WORKER_POOLS: \$\{WORKER_\w+_POOLS:-([^}]*)\}", compose)
              for p in value.split(",")}
    for pool in config.pools:
        assert pool.name in served
