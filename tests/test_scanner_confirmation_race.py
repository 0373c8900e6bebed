"""Four eyes confirm what the reviewer saw: a connection changed after the reviewer opened the scanner's page (or
chose it in the list) is not confirmed by their click. Otherwise whoever set a harmless connection could ask for
a confirmation, switch the URL to a host of their own while the reviewer reads the page, and have that confirmed:
authenticated scans, with their SSH passwords, would then go there."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from scanners.models import Scanner
from scanners.services import confirm_connection, connection_fingerprint, update_scanner
from tests.factories import ScannerFactory, UserFactory

GOOD, EVIL = "https://nessus-good.example.com:8834", "https://collector.attacker.example:8834"


def _staff(username: str, *codenames: str):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="scanners", codename__in=codenames))
    return user


def _button_value(html: str) -> str:
    return re.search(r'name="_confirm_connection" value="([0-9a-f]+)"', html).group(1)


@pytest.mark.django_db
def test_the_button_confirms_only_the_connection_the_reviewer_saw(client):
    scanner = ScannerFactory(url="https://nessus-old.example.com:8834")
    update_scanner(scanner.pk, {"url": GOOD}, given_secrets=["password"], actor="mallory")
    client.force_login(_staff("rita", "view_scanner", "confirm_scanner_connection"))
    page = client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    seen = _button_value(page)
    # While rita reads the page, mallory points the scanner elsewhere.
    update_scanner(scanner.pk, {"url": EVIL}, given_secrets=["password"], actor="mallory")
    confirm_url = reverse("admin:scanners_scanner_confirm_connection", args=[scanner.pk])
    answer = client.post(confirm_url, {"_confirm_connection": seen}, follow=True).content.decode()
    assert "changed since" in answer and "collector.attacker.example" in answer
    assert not Scanner.objects.get(pk=scanner.pk).connection_confirmed
    # A POST without the value of a page (a forged or stale form) confirms nothing either.
    client.post(confirm_url, follow=True)
    assert not Scanner.objects.get(pk=scanner.pk).connection_confirmed
    # Reloaded, she sees the new URL and may confirm what she now sees.
    page = client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    assert "collector.attacker.example" in page
    client.post(confirm_url, {"_confirm_connection": _button_value(page)}, follow=True)
    assert Scanner.objects.get(pk=scanner.pk).connection_confirmed


@pytest.mark.django_db
def test_the_list_action_asks_first_and_confirms_only_what_it_showed(client):
    scanner = ScannerFactory(url="https://nessus-old.example.com:8834")
    update_scanner(scanner.pk, {"url": GOOD}, given_secrets=["password"], actor="mallory")
    client.force_login(_staff("rita", "view_scanner", "confirm_scanner_connection"))
    changelist = reverse("admin:scanners_scanner_changelist")
    chosen = {"action": "confirm_connection_action", "_selected_action": [str(scanner.pk)]}
    review = client.post(changelist, chosen).content.decode()
    assert GOOD in review and not Scanner.objects.get(pk=scanner.pk).connection_confirmed  # a page to review first
    seen = re.search(rf'name="seen_{scanner.pk}" value="([0-9a-f]+)"', review).group(1)
    update_scanner(scanner.pk, {"url": EVIL}, given_secrets=["password"], actor="mallory")
    answer = client.post(changelist, {**chosen, "apply": "1", f"seen_{scanner.pk}": seen}, follow=True)
    assert "changed since" in answer.content.decode()
    assert not Scanner.objects.get(pk=scanner.pk).connection_confirmed
    review = client.post(changelist, chosen).content.decode()
    seen = re.search(rf'name="seen_{scanner.pk}" value="([0-9a-f]+)"', review).group(1)
    client.post(changelist, {**chosen, "apply": "1", f"seen_{scanner.pk}": seen}, follow=True)
    assert Scanner.objects.get(pk=scanner.pk).connection_confirmed_by == "rita"


@pytest.mark.django_db
def test_the_service_refuses_a_person_without_the_connection_they_reviewed():
    scanner = ScannerFactory()
    update_scanner(scanner.pk, {"url": GOOD}, given_secrets=["password"], actor="mallory")
    rita = _staff("rita", "confirm_scanner_connection")
    seen = connection_fingerprint(Scanner.objects.get(pk=scanner.pk))
    update_scanner(scanner.pk, {"url": EVIL}, given_secrets=["password"], actor="mallory")
    for given in (None, seen):
        with pytest.raises(PermissionDenied, match="changed since"):
            confirm_connection(scanner.pk, user=rita, seen=given)
    assert confirm_connection(scanner.pk, user=rita, seen=connection_fingerprint(Scanner.objects.get(pk=scanner.pk)))


@pytest.mark.django_db
@pytest.mark.parametrize("codenames", [("view_scanner",), ("view_scanner", "change_scanner")])
def test_the_button_is_only_for_whoever_may_confirm(client, codenames):
    """Without scanners.confirm_scanner_connection the page says the connection is unconfirmed and by whom, but
    offers no Confirm button (its click was refused with a message)."""
    scanner = ScannerFactory(url="https://nessus-old.example.com:8834")
    update_scanner(scanner.pk, {"url": GOOD}, given_secrets=["password"], actor="mallory")
    client.force_login(_staff("vera", *codenames))
    page = client.get(reverse("admin:scanners_scanner_change", args=[scanner.pk])).content.decode()
    assert "unconfirmed" in page and "mallory" in page
    assert 'name="_confirm_connection"' not in page
