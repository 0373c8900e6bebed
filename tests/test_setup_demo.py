"""manage.py setup_demo (run by `make run` every time): the admin superuser, its token, the demo pool."""

from __future__ import annotations

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from scanners.models import Scanner
from tasks.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_env(settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    monkeypatch.delenv("SCANPOOL_DEMO_PASSWORD", raising=False)
    monkeypatch.setenv("SCANPOOL_EMULATOR_PORT", "18834")
    monkeypatch.setenv("SCANPOOL_EMULATOR_INSTANCES", "2")
    return monkeypatch


def run() -> str:
    out = io.StringIO()
    call_command("setup_demo", stdout=out)
    return out.getvalue()


def test_setup_demo_is_idempotent_and_prints_how_to_log_in(demo_env, tmp_path):
    first = run()
    password_file = tmp_path / "demo-admin-password"
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff and user.check_password(password)
    token_file = tmp_path / "demo-api-token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert ApiToken.find(token).user == user  # a working key of the API's token model (only its hash stored)
    assert f"Authorization: Token {token}" in first
    for text in (
        "http://127.0.0.1:8000/admin/",
        f"admin / {password}",
        token,
        "/ops/dashboard/",
        "/ops/queues/",
        "/readyz",
        "/metrics",
    ):
        assert text in first

    scanners = {s.name: s for s in Scanner.objects.select_related("pool")}
    assert set(scanners) == {"emulator-1", "emulator-2"}
    assert scanners["emulator-1"].url == "https://127.0.0.1:18834" and scanners["emulator-1"].max_concurrent_scans == 2
    assert scanners["emulator-2"].url == "https://127.0.0.1:18835" and scanners["emulator-2"].max_concurrent_scans == 1
    assert all(not s.verify_tls and s.username == "admin" and s.password == "admin" for s in scanners.values())
    assert all(s.connection_confirmed for s in scanners.values())  # loaded like load_scanners: confirmed
    assert scanners["emulator-1"].pool.name == "demo" and scanners["emulator-1"].pool.poll_interval_seconds == 5

    second = run()  # same password, same token, nothing changed
    assert f"admin / {password}" in second and token in second
    assert "0 create, 0 update, 0 disable, 3 unchanged" in second
    assert get_user_model().objects.count() == 1 and ApiToken.objects.count() == 1

    ApiToken.objects.all().delete()  # deleted (or revoked) in the admin: the next run issues a new one
    third = run()
    new_token = (tmp_path / "demo-api-token").read_text().strip()
    assert new_token != token and new_token in third and ApiToken.find(new_token) is not None


def test_fewer_emulator_instances_disable_the_extra_demo_scanners(demo_env):
    demo_env.setenv("SCANPOOL_EMULATOR_INSTANCES", "3")
    run()
    demo_env.setenv("SCANPOOL_EMULATOR_INSTANCES", "1")
    run()
    enabled = dict(Scanner.objects.values_list("name", "enabled"))
    assert enabled == {"emulator-1": True, "emulator-2": False, "emulator-3": False}


def test_password_from_the_environment_wins_and_a_changed_password_is_left_alone(demo_env):
    demo_env.setenv("SCANPOOL_DEMO_PASSWORD", "from-the-env-123")
    assert "admin / from-the-env-123" in run()
    user = get_user_model().objects.get(username="admin")
    assert user.check_password("from-the-env-123")

    demo_env.delenv("SCANPOOL_DEMO_PASSWORD")
    user.set_password("changed-in-the-admin-456")
    user.save()
    output = run()
    assert "admin / (unchanged)" in output
    user.refresh_from_db()
    assert user.check_password("changed-in-the-admin-456")
