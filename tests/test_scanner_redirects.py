"""Issue #8 item 3: the Nessus client follows no redirect. A scanner URL that answers 3xx must not
make scanpool send its API keys, session cookie or login body to the redirect's target."""

from __future__ import annotations

import pytest

from scanners.adapters.base import PermanentScannerError
from scanners.adapters.nessus import NessusAdapter
from scanners.adapters.nessus.client import NessusClient
from scanners.models import Health
from tests.recording_server import RecordingServer

SECRETS = ("AK-never-elsewhere", "SK-never-elsewhere", "pw-never-elsewhere", "tok-never-elsewhere")


@pytest.fixture
def servers():
    with RecordingServer() as target:
        with RecordingServer(redirect_to=target.url + "/elsewhere") as redirector:
            yield redirector, target


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_api_keys_are_not_forwarded_by_a_redirect(servers, status):
    redirector, target = servers
    redirector.status = status
    client = NessusClient(redirector.url, access_key=SECRETS[0], secret_key=SECRETS[1], retries=0)
    with pytest.raises(PermanentScannerError) as caught:
        client.get_json("/scans", what="list the scans")
    message = str(caught.value)
    assert f"HTTP {status}" in message and "redirect" in message
    assert f"{target.url}/elsewhere/scans" in message  # the Location, so the operator can fix the URL
    assert not any(secret in message for secret in SECRETS)
    assert len(redirector.requests) == 1 and "X-ApiKeys" in redirector.requests[0].headers
    assert target.requests == []


def test_login_body_is_not_replayed_to_a_redirect(servers):
    redirector, target = servers
    redirector.status = 307  # 307/308 would make a following client resend the POST body
    client = NessusClient(redirector.url, username="admin", password=SECRETS[2], retries=0)
    with pytest.raises(PermanentScannerError, match="redirect"):
        client.login()
    assert [r.path for r in redirector.requests] == ["/session"]
    assert target.requests == []


def test_session_cookie_is_not_forwarded_by_a_redirect(servers):
    redirector, target = servers
    client = NessusClient(redirector.url, username="admin", password="x", retries=0)
    client._use_token(SECRETS[3])  # a session obtained earlier
    with pytest.raises(PermanentScannerError, match="redirect"):
        client.get_json("/scans", what="list the scans")
    client.logout()  # DELETE /session with the cookie: also not followed
    assert redirector.requests and all("X-Cookie" in r.headers for r in redirector.requests)
    assert target.requests == []


def test_health_check_of_a_redirecting_scanner_is_an_error_naming_the_target(servers):
    redirector, target = servers
    adapter = NessusAdapter(redirector.url, access_key=SECRETS[0], secret_key=SECRETS[1], retries=0)
    report = adapter.health()
    assert report.status == Health.NOT_READY
    assert "redirect" in report.detail and target.url in report.detail
    assert not any(secret in report.detail for secret in SECRETS)
    assert target.requests == []


def test_location_with_a_password_is_not_echoed(servers):
    redirector, target = servers
    redirector.redirect_to = target.url.replace("http://", "http://user:hunter2@")
    client = NessusClient(redirector.url, access_key=SECRETS[0], secret_key=SECRETS[1], retries=0)
    with pytest.raises(PermanentScannerError) as caught:
        client.get_json("/scans", what="list the scans")
    assert "hunter2" not in str(caught.value)
    assert target.requests == []
