"""`make smoke`'s fixed parts, checked without running it (it needs root, PostgreSQL and minutes):
the scanners file it loads is accepted as production loads it (explicit scope, https, no password written),
and `.ci/run` runs `make test` then `make smoke`, stopping at the first failure."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


def smoke_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE_WORK", str(tmp_path))
    spec = importlib.util.spec_from_file_location("smoke_stack", ROOT / "scripts" / "smoke_stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db
def test_the_smoke_scanners_file_loads_with_an_explicit_scope_and_no_password(tmp_path, monkeypatch):
    from pools.models import Pool
    from pools.scope import parse_target
    from scanners.models import Scanner
    from scanners.scope import pool_scope

    driver = smoke_stack(tmp_path, monkeypatch)
    text = driver.scanners_yaml([("smoke_local", ["https://127.0.0.1:18834", "https://127.0.0.1:18835"]),
                                 ("smoke_a", ["https://198.18.1.2:18834"])])
    assert "admin" not in text  # the scanner login comes from ${VAR}s
    path = tmp_path / "scanners.yaml"
    path.write_text(text)
    monkeypatch.setenv("SMOKE_SCANNER_USER", "admin")
    monkeypatch.setenv("SMOKE_SCANNER_PASSWORD", "admin")
    call_command("load_scanners", str(path))

    assert set(Pool.objects.values_list("name", flat=True)) == {"smoke_local", "smoke_a"}
    assert Scanner.objects.filter(pool__name="smoke_local").count() == 2
    for pool in Pool.objects.all():
        assert pool.scope == [driver.SCOPE] and not pool.allow_any_target and not pool.allow_plain_http
        scope = pool_scope(pool)
        # The smoke's targets are in scope; the scanners' own addresses and anything else are not.
        assert scope.allows(parse_target("192.0.2.10")) and scope.allows(parse_target("192.0.2.11"))
        assert not scope.allows(parse_target("127.0.0.1")) and not scope.allows(parse_target("198.18.1.2"))
    assert all(s.url.startswith("https://") and not s.allow_plain_http for s in Scanner.objects.all())


def fake_make(tmp_path: Path, fail: str | None) -> tuple[dict[str, str], Path]:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" != "{fail or ""}" ]\n')
    make.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


@pytest.mark.parametrize(("fail", "expected_calls", "ok"), [
    (None, ["test", "smoke"], True),
    ("test", ["test"], False),     # a failing suite stops CI before the smoke test
    ("smoke", ["test", "smoke"], False),
])
def test_ci_runs_make_test_then_make_smoke_and_fails_when_either_fails(tmp_path, fail, expected_calls, ok):
    env, calls = fake_make(tmp_path, fail)
    result = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode == 0) is ok, result.stderr
    assert calls.read_text().split() == expected_calls
