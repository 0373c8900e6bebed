"""Test set-up shared by every test: a real redis-server on a free port for the whole session."""

from __future__ import annotations

import os

import pytest

from tests.redis_server import RedisServer

# Fixtures `emulator` and `emulator_factory` (the Nessus emulator, in-process or a subprocess): see tests/emulator.py.
pytest_plugins = ["tests.emulator", "tests.api_support"]  # + API fixtures: pool, operator, api

_redis: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _redis
    from django.conf import settings

    _select_test_database(settings)
    url = os.environ.get("SCANPOOL_TEST_REDIS_URL")
    if not url:
        _redis = RedisServer().start()
        url = _redis.url
    # Settings were loaded before this hook: point them (and any subprocess) at the test Redis (its URL carries
    # the server's password).
    os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url
    settings.RQ_QUEUES = {name: {**queue, "URL": url} for name, queue in settings.RQ_QUEUES.items()}
    # Hashing is not under test here: PBKDF2's 1,000,000 rounds made every user a test creates cost ~0.5 s.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _select_test_database(settings) -> None:
    """SCANPOOL_TEST_DATABASE_URL (e.g. the cluster `make test` starts) replaces the SQLite test database.

    pytest-django then creates ``test_<name>`` on that server; subprocesses (workers) reach it through
    ``tests.worker_process.subprocess_database_url()``. Django's connections are read lazily, so replacing
    DATABASES here, before any test touches the database, is enough.
    """
    url = os.environ.get("SCANPOOL_TEST_DATABASE_URL")
    if not url:
        return
    import dj_database_url
    from django.db import connections

    connections.close_all()
    settings.DATABASES = {"default": dj_database_url.parse(url)}
    # ConnectionHandler caches DATABASES twice (a cached_property over ``_settings``, which keeps the dict it was
    # first given) and keeps the connection objects made before this hook: unless all three are dropped, the
    # "PostgreSQL" lane ran on SQLite (it did until 2026-12-02; tests/test_settings.py now checks).
    connections.__dict__.pop("settings", None)
    connections._settings = None
    for alias in list(connections.settings):
        try:
            del connections[alias]
        except AttributeError:
            pass
    os.environ["DATABASE_URL"] = url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database-tests-only", action="store_true",
        help="run only the tests that may touch the test database (a django_db mark or a database fixture); "
             "`make test` runs the PostgreSQL lane so: the others cannot reach a database, and the SQLite lane "
             "runs every test")


_DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback",
                      "live_server"}


def uses_database(item: pytest.Item) -> bool:
    """Whether pytest-django lets ``item`` reach the test database (without, any query fails the test)."""
    return bool(item.get_closest_marker("django_db")
                or _DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--database-tests-only"):
        return
    keep = [item for item in items if uses_database(item)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not uses_database(item)])
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("--database-tests-only"):
        return "--database-tests-only: tests that cannot reach a database are deselected (the SQLite lane runs them)"
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None:
        _redis.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's redis-server (for tests that restart or flush it)."""
    if _redis is None:
        pytest.skip("SCANPOOL_TEST_REDIS_URL points at an external Redis that tests may not restart")
    return _redis


@pytest.fixture
def redis_conn():
    """A client on the test Redis, flushed before and after the test."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(autouse=True)
def _results_dir(settings, tmp_path):
    """Every test writes results files under its own temporary directory."""
    settings.SCANPOOL_RESULTS_DIR = tmp_path / "results"
