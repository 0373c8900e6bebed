"""/metrics is not anonymous: a bearer token (SCANPOOL_METRICS_TOKEN) and/or client networks
(SCANPOOL_METRICS_ALLOWED_IPS); with neither, loopback clients that did not come through a proxy."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.redis_server import free_port
from tests.test_settings import ROOT, production_env

TOKEN = "metrics-token-0123456789abcdef"


def get(client, remote: str = "127.0.0.1", **headers: str):
    return client.get("/metrics", REMOTE_ADDR=remote, headers=headers)


def is_metrics(response) -> bool:
    return response.status_code == 200 and b"django_http_requests" in response.content


@pytest.fixture
def neither(settings):
    settings.SCANPOOL_METRICS_TOKEN = ""
    settings.SCANPOOL_METRICS_ALLOWED_IPS = []


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_without_settings_loopback_clients_are_served(client, neither, remote):
    assert is_metrics(get(client, remote))


@pytest.mark.parametrize("remote", ["10.0.0.5", "192.0.2.1", "2001:db8::1", "", "not-an-ip"])
def test_without_settings_other_clients_get_403(client, neither, remote):
    response = get(client, remote)
    assert response.status_code == 403
    assert response.json() == {"detail": "metrics: served to loopback clients only (set SCANPOOL_METRICS_TOKEN)"}
    assert b"django_http" not in response.content


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_without_settings_a_request_through_a_local_proxy_is_not_loopback(client, neither, header):
    assert get(client, "127.0.0.1", **{header: "203.0.113.9"}).status_code == 403


def test_a_token_is_required_when_set_from_anywhere_even_loopback(client, settings):
    settings.SCANPOOL_METRICS_TOKEN = TOKEN
    settings.SCANPOOL_METRICS_ALLOWED_IPS = []
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {TOKEN}"},
                    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer é"}):
        response = get(client, "127.0.0.1", **headers)
        assert response.status_code == 401, headers
        assert response.json() == {"detail": "metrics: bearer token required"}
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert is_metrics(get(client, "10.9.8.7", Authorization=f"Bearer {TOKEN}"))
    assert is_metrics(get(client, "10.9.8.7", Authorization=f"bearer {TOKEN}"))


def test_an_address_allow_list_replaces_the_loopback_default(client, settings):
    settings.SCANPOOL_METRICS_TOKEN = ""
    settings.SCANPOOL_METRICS_ALLOWED_IPS = ["10.0.0.0/24", "2001:db8::7"]
    assert is_metrics(get(client, "10.0.0.5"))
    assert is_metrics(get(client, "2001:db8::7"))
    for remote in ("10.0.1.5", "127.0.0.1", "2001:db8::8"):
        response = get(client, remote)
        assert response.status_code == 403, remote
        assert response.json() == {"detail": "metrics: client address not allowed"}


def test_token_and_addresses_together_need_both(client, settings):
    settings.SCANPOOL_METRICS_TOKEN = TOKEN
    settings.SCANPOOL_METRICS_ALLOWED_IPS = ["10.0.0.0/24"]
    assert get(client, "10.0.1.5", Authorization=f"Bearer {TOKEN}").status_code == 403
    assert get(client, "10.0.0.5").status_code == 401
    assert is_metrics(get(client, "10.0.0.5", Authorization=f"Bearer {TOKEN}"))


def _fetch(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
def test_production_server_over_http_needs_the_token(tmp_path):
    """DJANGO_DEBUG=0 (where /metrics used to be anonymous too), over real HTTP."""
    env = production_env(tmp_path, DJANGO_ALLOWED_HOSTS="127.0.0.1", DJANGO_SECURE_SSL_REDIRECT="0")
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _fetch(url)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert status == 401 and json.loads(body) == {"detail": "metrics: bearer token required"}
        status, body = _fetch(url, Authorization=f"Bearer {TOKEN}")
        assert status == 200 and b"django_http_requests" in body
    finally:
        server.terminate()
        server.wait(10)
