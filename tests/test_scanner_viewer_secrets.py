"""A staff user who may only *view* scanners gets every field of the change page read-only, rendered from the model:
the stored API keys and password must not be among them (they were printed in clear). The masked summary stays.
Every admin page such a user can open is checked for the secrets."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.factories import PoolFactory, ScannerFactory, UserFactory

AK, SK, PW = "AK-CANARY-77777", "SK-CANARY-88888", "SCANPW-CANARY-9"


@pytest.mark.parametrize("perms", [["view_scanner"], ["view_scanner", "view_pool"]])
def test_a_viewer_never_sees_a_scanners_stored_secrets(client, db, perms):
    pool = PoolFactory(name="dmz")
    keys = ScannerFactory(pool=pool, name="keys", access_key=AK, secret_key=SK, username="", password="")
    login = ScannerFactory(pool=pool, name="login", access_key="", secret_key="", username="nessus-admin",
                           password=PW)
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client.force_login(viewer)
    pages = [reverse("admin:scanners_scanner_changelist")]
    pages += [reverse("admin:scanners_scanner_change", args=[s.pk]) for s in (keys, login)]
    pages += [reverse("admin:scanners_scanner_history", args=[s.pk]) for s in (keys, login)]
    if "view_pool" in perms:
        pages += [reverse("admin:pools_pool_changelist"), reverse("admin:pools_pool_change", args=[pool.pk])]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        for secret in (AK, SK, PW):
            assert secret not in html, (page, secret)
    html = client.get(reverse("admin:scanners_scanner_change", args=[login.pk])).content.decode()
    assert "password •••• set" in html  # the masked summary, still shown
    assert "nessus-admin" in html  # the user name is no secret


def test_a_typed_secret_in_the_stored_form_is_refused_not_decrypted(client, db):
    """``fernet:<token>`` is how the model field stores a secret, and reads it: typed into the form (from a backup or
    a dump), it was decrypted and stored, then sent to the scanner's URL at the next login — a decryption oracle
    for anyone who may edit a scanner."""
    from scanpool_site import crypto

    scanner = ScannerFactory(name="s1", username="admin", password="old-password", access_key="", secret_key="")
    editor = UserFactory(username="editor", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_scanner", "change_scanner"]))
    client.force_login(editor)
    data = {"pool": scanner.pool_id, "name": scanner.name, "kind": scanner.kind, "description": "",
            "url": scanner.url, "username": "admin", "password": crypto.encrypt("THE-PLAINTEXT"), "access_key": "",
            "secret_key": "", "ca_bundle": "", "max_concurrent_scans": scanner.max_concurrent_scans, "enabled": "on",
            "verify_tls": "on"}
    response = client.post(reverse("admin:scanners_scanner_change", args=[scanner.pk]), data)
    assert response.status_code == 200  # the form again, with the error
    html = response.content.decode()
    assert "may not start with &#x27;fernet:&#x27;" in html and "THE-PLAINTEXT" not in html
    scanner.refresh_from_db()
    assert scanner.password == "old-password"


@pytest.mark.parametrize(("url_name", "lookup"), [
    ("admin:scanners_scanner_changelist", "access_key__startswith"),
    ("admin:scanners_scanner_changelist", "password__contains"),
    ("admin:tasks_scantask_changelist", "credentials__startswith"),
    ("admin:tasks_scantask_changelist", "assigned_scanner__secret_key__startswith"),
])
def test_the_lists_refuse_lookups_that_read_out_the_stored_ciphertext(client, db, url_name, lookup):
    """The admin lets a viewer filter by any field in the query string: ``?access_key__startswith=fernet:gAAAA``
    answered with the scanner or without it, so the stored ciphertext could be read out a character at a time."""
    ScannerFactory(name="keys", access_key=AK, secret_key=SK, password=PW)
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_scanner", "view_scantask"]))
    client.force_login(viewer)
    response = client.get(reverse(url_name), {lookup: "fernet:gAAAA"})
    assert response.status_code == 400
    assert client.get(reverse(url_name), {"name__startswith": "k"}).status_code == 200  # other lookups still work
