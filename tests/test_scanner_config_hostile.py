"""Issue #8 (low items): hostile scanner configuration. YAML anchors/aliases are refused fast (an alias bomb,
a recursive alias); ``${VAR}`` is expanded only in secret fields and its values are never echoed; a CA bundle
must be a usable PEM file when saved (admin and YAML, one message), and one that disappears later is a clear
health error, not a 500."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from scanners.emulator.tls import ensure_certificate
from scanners.health import check_health
from scanners.models import Health, Scanner
from scanners.validators import CA_BUNDLE_UNUSABLE
from tests.factories import ScannerFactory
from tests.scanner_config_support import write

pytestmark = pytest.mark.django_db

# The classic "billion laughs": 9 levels of 9 aliases, ~10^9 strings once expanded (~600 bytes here).
ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

RECURSIVE = """\
pools:
  - &p
    name: dmz
    scanners: [*p]
"""

ALIASED_SECRET = """\
pools:
  - name: dmz
    scanners:
      - name: dmz-1
        url: https://dmz-1:8834
        username: admin
        password: &pw hunter2
      - name: dmz-2
        url: https://dmz-2:8834
        username: admin
        password: *pw
"""


def _load_error(tmp_path, text: str) -> str:
    with pytest.raises(CommandError) as caught:
        call_command("load_scanners", str(write(tmp_path, text)), stdout=io.StringIO(), stderr=io.StringIO())
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, "scanners.yaml:1: YAML anchor '&a' at line 1, column 4: anchors (&name) and aliases"),
        (RECURSIVE, "scanners.yaml:2: YAML anchor '&p' at line 2, column 5"),
        (ALIASED_SECRET, "scanners.yaml:7: YAML anchor '&pw' at line 7, column 19"),
    ],
    ids=["alias_bomb", "recursive_alias", "aliased_secret"],
)
def test_anchors_and_aliases_are_refused_fast_at_line_and_column(tmp_path, text, expected):
    started = time.monotonic()
    message = _load_error(tmp_path, text)
    assert time.monotonic() - started < 2.0
    assert expected in message, message
    assert "write the values out in full" in message
    assert "Traceback" not in message and "hunter2" not in message
    assert not Scanner.objects.exists()


def test_an_alias_without_anchor_is_refused_too(tmp_path):
    message = _load_error(tmp_path, "pools: *nothing\n")
    assert "scanners.yaml:1: YAML alias '*nothing' at line 1, column 8" in message


SECRET_ONLY = """\
pools:
  - name: dmz
    description: ${DESCRIPTION_VAR}
    scanners:
      - name: dmz-1
        url: https://${SCANNER_HOST}:8834
        username: ${SCANNER_USER}
        password: ${SCANNER_PASSWORD}
"""


def test_variables_are_expanded_only_in_secret_fields_and_never_echoed(tmp_path, monkeypatch):
    monkeypatch.setenv("DESCRIPTION_VAR", "postgres://app:db-password-value@db/app")
    monkeypatch.setenv("SCANNER_HOST", "host-value")
    monkeypatch.setenv("SCANNER_USER", "user-value")
    monkeypatch.setenv("SCANNER_PASSWORD", "password-value")
    message = _load_error(tmp_path, SECRET_ONLY)
    assert "scanners.yaml:3: pools[0].description: '${...}' is expanded only in access_key, password, secret_key, " \
           "username" in message
    assert "scanners.yaml:6: pools[0].scanners[0].url: '${...}' is expanded only in" in message
    for value in ("db-password-value", "host-value", "user-value", "password-value"):
        assert value not in message
    assert not Scanner.objects.exists()

    # In secret fields it works; a literal ${ elsewhere is written $${.
    text = SECRET_ONLY.replace("${DESCRIPTION_VAR}", '"costs $${5}"').replace("${SCANNER_HOST}", "dmz-1")
    call_command("load_scanners", str(write(tmp_path, text)), stdout=io.StringIO(), stderr=io.StringIO())
    scanner = Scanner.objects.get(name="dmz-1")
    assert (scanner.username, scanner.password, scanner.pool.description) == ("user-value", "password-value",
                                                                               "costs ${5}")


def test_a_bad_secret_value_is_reported_without_its_value(tmp_path, monkeypatch):
    monkeypatch.setenv("LONG_USER", "u" * 151 + "-user-marker")
    text = SECRET_ONLY.replace("    description: ${DESCRIPTION_VAR}\n", "").replace("${SCANNER_HOST}", "dmz-1")
    text = text.replace("${SCANNER_USER}", "${LONG_USER}").replace("${SCANNER_PASSWORD}", "[secret-list-marker]")
    message = _load_error(tmp_path, text)
    assert "pools[0].scanners[0].password: expected a string (got a list)" in message
    assert "secret-list-marker" not in message and "user-marker" not in message


# ------------------------------------------------------------------------------------- CA bundles


def _post(admin_client, scanner: Scanner, ca_bundle: str):
    return admin_client.post(reverse("admin:scanners_scanner_change", args=[scanner.pk]), {
        "pool": scanner.pool_id, "name": scanner.name, "kind": scanner.kind, "description": "", "url": scanner.url,
        "username": scanner.username, "password": "", "access_key": "", "secret_key": "", "verify_tls": "on",
        "ca_bundle": ca_bundle, "max_concurrent_scans": 1, "enabled": "on", "allow_plain_http": "on",
    })  # fmt: skip


def test_admin_validates_the_ca_bundle_with_one_message(admin_client, tmp_path):
    scanner = ScannerFactory(url="https://scanner.example.com:8834", verify_tls=True, password="pw")
    (tmp_path / "notes.txt").write_text("hello\n")
    for path in ("/etc/shadow", "/nonexistent/ca.pem", str(tmp_path), str(tmp_path / "notes.txt"), "ca.pem"):
        response = _post(admin_client, scanner, path)
        assert response.status_code == 200
        body = response.content.decode()
        assert CA_BUNDLE_UNUSABLE.split(":")[0] in body and "No such file" not in body, path
    scanner.refresh_from_db()
    assert scanner.ca_bundle == ""

    cert, _key = ensure_certificate(tmp_path / "ca")
    response = _post(admin_client, scanner, str(cert))
    assert response.status_code == 302, response.content.decode()[-2000:]
    scanner.refresh_from_db()
    assert scanner.ca_bundle == str(cert)


def test_a_ca_bundle_that_disappears_later_is_a_clear_health_error(admin_client, tmp_path):
    cert, _key = ensure_certificate(tmp_path / "ca")
    scanner = ScannerFactory(url="https://127.0.0.1:9", verify_tls=True, ca_bundle=str(cert), password="pw")
    cert.unlink()
    report = check_health(scanner.pk)
    assert report.status == Health.UNREACHABLE
    assert "is not a usable CA bundle" in report.detail

    response = admin_client.post(
        reverse("admin:scanners_scanner_changelist"),
        {"action": "check_health_action", "_selected_action": [str(scanner.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert "not a usable CA bundle" in response.content.decode()
