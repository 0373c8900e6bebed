"""The admin's edit forms: scanner credentials are write-only (blank keeps, new replaces, clear removes),
URLs and logins are validated, and a pool's scope is edited one entry per line."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pools.models import Pool
from scanners.models import Scanner
from tests.factories import PoolFactory, ScannerFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-Value-that-must-never-show"


def _scanner_post_data(scanner: Scanner, **overrides: str) -> dict:
    data = {
        "pool": scanner.pool_id,
        "name": scanner.name,
        "kind": scanner.kind,
        "description": "",
        "url": scanner.url,
        "username": scanner.username,
        "password": "",
        "access_key": "",
        "secret_key": "",
        "ca_bundle": "",
        "max_concurrent_scans": scanner.max_concurrent_scans,
        "enabled": "on",
    }
    if scanner.allow_plain_http:
        data["allow_plain_http"] = "on"
    data.update(overrides)
    return data


def test_scanner_change_page_never_shows_the_stored_secret(admin_client):
    scanner = ScannerFactory(password=SECRET, access_key="AK-" + SECRET, secret_key="SK-" + SECRET)
    body = admin_client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    assert SECRET not in body
    assert "Currently •••• set" in body
    assert 'name="clear_password"' in body
    assert 'type="password" name="password"' in body


def test_scanner_secret_blank_keeps_new_value_replaces_clear_removes(admin_client):
    scanner = ScannerFactory(username="admin", password=SECRET, active_scans=1)
    url = reverse("admin:scanners_scanner_change", args=[scanner.pk])

    # Blank password: the stored one stays. Meanwhile a worker took a slot: the save must not undo it.
    Scanner.objects.filter(pk=scanner.pk).update(active_scans=2)
    response = admin_client.post(url, _scanner_post_data(scanner, max_concurrent_scans="5"))
    assert response.status_code == 302, response.content.decode()[:2000]
    scanner.refresh_from_db()
    assert (scanner.password, scanner.max_concurrent_scans, scanner.active_scans) == (SECRET, 5, 2)

    response = admin_client.post(url, _scanner_post_data(scanner, password="new-password"))
    assert response.status_code == 302
    scanner.refresh_from_db()
    assert scanner.password == "new-password"

    # Clearing the password leaves no way to log in: refused with a message, nothing changed.
    response = admin_client.post(url, _scanner_post_data(scanner, clear_password="on"))
    assert response.status_code == 200
    assert "username and password" in response.content.decode()
    scanner.refresh_from_db()
    assert scanner.password == "new-password"

    # Switching to API keys and clearing the password works.
    response = admin_client.post(
        url, _scanner_post_data(scanner, clear_password="on", username="", access_key="AK", secret_key="SK")
    )
    assert response.status_code == 302
    scanner.refresh_from_db()
    assert (scanner.password, scanner.access_key, scanner.secret_key) == ("", "AK", "SK")


def test_scanner_add_validates_url_and_credentials(admin_client):
    pool = PoolFactory()
    url = reverse("admin:scanners_scanner_add")
    data = {
        "pool": pool.pk,
        "name": "dmz-2",
        "kind": "nessus",
        "url": "ftp://dmz-2",
        "username": "admin",
        "password": "pw",
        "max_concurrent_scans": "0",
        "enabled": "on",
    }
    body = admin_client.post(url, data).content.decode()
    assert "must start with https://" in body
    assert not Scanner.objects.filter(name="dmz-2").exists()

    data.update(url="https://dmz-2:8834", max_concurrent_scans="2")  # a single-label host is fine
    response = admin_client.post(url, data)
    assert response.status_code == 302
    assert Scanner.objects.get(name="dmz-2").password == "pw"


def test_pool_scope_is_edited_one_entry_per_line(admin_client):
    url = reverse("admin:pools_pool_add")
    data = {
        "name": "dmz",
        "description": "",
        "enabled": "on",
        "scope": "10.20.0.0/16\n*.dmz.example.com",
        "max_queued": "0",
        "scan_timeout_seconds": "3600",
        "poll_interval_seconds": "30",
        "scanners-TOTAL_FORMS": "0",  # the read-only scanners inline
        "scanners-INITIAL_FORMS": "0",
        "events-TOTAL_FORMS": "0",  # the read-only scope history inline
        "events-INITIAL_FORMS": "0",
    }
    response = admin_client.post(url, {**data, "scope": "10.20.0.0/16\nnot a host!"})
    assert response.status_code == 200
    assert "not a CIDR" in response.content.decode()
    assert admin_client.post(url, data).status_code == 302
    assert Pool.objects.get(name="dmz").scope == ["10.20.0.0/16", "*.dmz.example.com"]


def test_pool_change_saves_the_edited_scope(admin_client):
    pool = PoolFactory(name="dmz", scope=["10.0.0.0/8"], max_queued=5)
    url = reverse("admin:pools_pool_change", args=[pool.pk])
    data = {
        "name": "dmz",
        "description": "changed",
        "enabled": "on",
        "scope": "10.0.0.0/8\n192.0.2.0/24",
        "max_queued": "5",
        "scan_timeout_seconds": str(pool.scan_timeout_seconds),
        "poll_interval_seconds": str(pool.poll_interval_seconds),
        "scanners-TOTAL_FORMS": "0",
        "scanners-INITIAL_FORMS": "0",
        "events-TOTAL_FORMS": "0",  # the read-only scope history inline
        "events-INITIAL_FORMS": "0",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    pool.refresh_from_db()
    assert (pool.description, pool.scope, pool.max_queued) == ("changed", ["10.0.0.0/8", "192.0.2.0/24"], 5)
