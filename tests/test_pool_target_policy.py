"""Issue #8 item 7: an empty scope allows nothing; ``allow_any_target`` opens a pool (shown in the admin,
recorded as an event, in YAML and export); protected targets (loopback, link-local/metadata, unspecified,
the scanners' own addresses and names) are refused even then unless the scope lists them explicitly."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from pools.models import Pool, PoolEvent
from scanners.config import load_config, parse_config
from scanners.config.exporter import export_yaml
from tasks.errors import ScopeError, SubmissionError
from tasks.models import ScanTask
from tasks.services import submit
from tests.factories import PoolFactory, ScannerFactory, UserFactory

PROTECTED = ["127.0.0.1", "127.0.0.0/30", "127.255.255.254", "::1", "0.0.0.0", "::", "169.254.169.254",
             "169.254.10.0/24", "fe80::1", "fd00:ec2::254", "fd20:ce::254", "localhost", "api.localhost",
             "localhost4", "localhost6.localdomain6", "metadata.google.internal", "100.100.100.200",
             "224.0.0.1", "239.255.255.250", "255.255.255.255", "ff02::1"]


def _scope_error(pool: str, target: str) -> ScopeError:
    before = ScanTask.objects.count()
    with pytest.raises(ScopeError) as info:
        submit(pool=pool, name="n", targets=[target])
    assert ScanTask.objects.count() == before
    return info.value


def test_an_empty_scope_allows_nothing(db):
    PoolFactory(name="closed", scope=[])
    err = _scope_error("closed", "192.0.2.10")
    assert err.status_code == 403 and "empty scope and allows no target" in err.message
    assert "allow_any_target" in err.message


@pytest.mark.parametrize("target", PROTECTED)
def test_an_unrestricted_pool_still_refuses_protected_targets(db, target):
    PoolFactory(name="open", scope=[], allow_any_target=True)
    err = _scope_error("open", target)
    assert "protected" in err.message and "list" in err.message, err.message


def test_an_unrestricted_pool_allows_other_targets(db):
    PoolFactory(name="open", scope=[], allow_any_target=True)
    task = submit(pool="open", name="n", targets=["8.8.8.8", "10.0.0.0/24", "www.example.org", "2001:db8::1"])
    assert task.targets == ["8.8.8.8", "10.0.0.0/24", "www.example.org", "2001:db8::1"]


def test_the_scanners_own_addresses_and_names_are_protected(db):
    pool = PoolFactory(name="open", scope=[], allow_any_target=True)
    ScannerFactory(pool=pool, name="s-ip", url="https://10.1.2.3:8834")
    ScannerFactory(pool=PoolFactory(name="other"), name="s-name", url="https://Nessus-1.corp.example.net:8834")
    for target in ("10.1.2.3", "10.1.2.0/24", "10.1.2.1-10.1.2.9", "nessus-1.corp.example.net"):
        assert "protected" in _scope_error("open", target).message
    assert submit(pool="open", name="n", targets=["10.1.2.4"]).targets == ["10.1.2.4"]


def test_explicit_entries_allow_protected_targets_wide_ones_do_not(db):
    PoolFactory(name="lab", scope=["127.0.0.1", "169.254.169.254", "localhost", "0.0.0.0/0", "*.localhost"])
    assert submit(pool="lab", name="n", targets=["127.0.0.1", "localhost", "169.254.169.254", "8.8.8.8"])
    for target in ("127.0.0.2", "127.0.0.0/30", "169.254.169.253", "0.0.0.0", "api.localhost"):
        assert "protected" in _scope_error("lab", target).message
    PoolFactory(name="lab6", scope=[], allow_any_target=True)
    # ::ffff:127.0.0.1 spelled in hex: an IPv4 address written as IPv6, refused before any scope is consulted
    with pytest.raises(SubmissionError, match=r"give 127\.0\.0\.1"):
        submit(pool="lab6", name="n", targets=["::ffff:7f00:1"])


def test_admin_shows_allow_any_target_and_records_who_set_it(client, db):
    staff = UserFactory(username="pool-editor", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["change_pool", "view_pool"]))
    client.force_login(staff)
    pool = PoolFactory(name="dmz", scope=["192.0.2.0/24"])
    url = reverse("admin:pools_pool_change", args=[pool.pk])
    page = client.get(url).content.decode()
    assert "allow_any_target" in page and "What this pool may scan" in page
    data = {"name": "dmz", "description": "", "enabled": "on", "scope": "", "allow_any_target": "on",
            "max_queued": "0", "scan_timeout_seconds": "3600", "poll_interval_seconds": "30",
            "scanners-TOTAL_FORMS": "0", "scanners-INITIAL_FORMS": "0",
            "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"}
    assert client.post(url, data).status_code == 302
    pool.refresh_from_db()
    assert pool.allow_any_target and pool.scope == []
    events = {e.message: e.actor for e in PoolEvent.objects.filter(pool=pool)}
    assert events["allow_any_target set: every target not protected is allowed"] == "pool-editor"
    assert any(m.startswith("scope changed: [192.0.2.0/24] → []") for m in events)
    page = client.get(url).content.decode()
    assert "ANY target" in page
    assert "scope history" in page.lower() and "allow_any_target set" in page
    listing = client.get(reverse("admin:pools_pool_changelist")).content.decode()
    assert "ANY target" in listing


YAML = """
pools:
  - name: wide
    scope: []
    allow_any_target: true
    scanners: []
  - name: closed
    scanners: []
"""


def test_yaml_allow_any_target_loads_records_an_event_and_exports(db):
    load_config(parse_config(YAML, "pools.yaml"))
    wide, closed = Pool.objects.get(name="wide"), Pool.objects.get(name="closed")
    assert wide.allow_any_target and not closed.allow_any_target
    assert PoolEvent.objects.get(pool=wide).message == "created; may scan any target not protected"
    assert PoolEvent.objects.get(pool=closed).message == "created; may scan nothing (empty scope)"
    exported = export_yaml()
    assert "allow_any_target: true" in exported and "allow_any_target: false" in exported
    load_config(parse_config(YAML.replace("allow_any_target: true", "allow_any_target: false"), "pools.yaml"))
    assert not Pool.objects.get(name="wide").allow_any_target
    last = PoolEvent.objects.filter(pool=wide).first()
    assert last.message.startswith("allow_any_target cleared") and last.actor == "load_scanners pools.yaml"


def test_yaml_allow_any_target_must_be_a_boolean(db):
    from scanners.config import ConfigError

    with pytest.raises(ConfigError, match=r"allow_any_target.*expected true or false"):
        parse_config(YAML.replace("allow_any_target: true", "allow_any_target: everything"), "pools.yaml")


@pytest.mark.django_db(transaction=True)
def test_upgrade_keeps_existing_empty_scope_pools_closed():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("pools", "0001_initial")])
    old_apps = executor.loader.project_state([("pools", "0001_initial")]).apps
    OldPool = old_apps.get_model("pools", "Pool")
    OldPool.objects.create(name="legacy-open", scope=[])
    OldPool.objects.create(name="scoped", scope=["192.0.2.0/24"])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    legacy = Pool.objects.get(name="legacy-open")
    assert not legacy.allow_any_target  # never opened silently
    assert "empty scope now allows no target" in PoolEvent.objects.get(pool=legacy).message
    assert not PoolEvent.objects.filter(pool__name="scoped").exists()
    with pytest.raises(ScopeError, match="empty scope"):
        submit(pool="legacy-open", name="n", targets=["192.0.2.1"])
