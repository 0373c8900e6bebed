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
        "--database-free-part", default="1/1", metavar="K/N",
        help="of the tests that cannot reach a database (no django_db mark, no database fixture), run only part K "
             "of N (split by a hash of the test id; 0/N: none). `make test` gives one half to each of its two "
             "lanes: such a test runs the same code whatever the lane's database. Default 1/1: all of them")


_DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback",
                      "live_server"}


def uses_database(item: pytest.Item) -> bool:
    """Whether pytest-django lets ``item`` reach the test database (without, any query fails the test)."""
    return bool(item.get_closest_marker("django_db")
                or _DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def _database_free_part(config: pytest.Config) -> tuple[int, int]:
    raw = config.getoption("--database-free-part")
    try:
        part, parts = (int(n) for n in raw.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--database-free-part={raw!r}: give K/N, e.g. 1/2") from None
    if parts < 1 or not 0 <= part <= parts:
        raise pytest.UsageError(f"--database-free-part={raw!r}: K must be 0..N and N at least 1")
    return part, parts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    part, parts = _database_free_part(config)
    if (part, parts) == (1, 1):
        return
    import zlib

    def kept(item: pytest.Item) -> bool:
        return uses_database(item) or (part > 0 and zlib.crc32(item.nodeid.encode()) % parts == part - 1)

    keep = [item for item in items if kept(item)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not kept(item)])
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str | None:
    part, parts = _database_free_part(config)
    if (part, parts) != (1, 1):
        return (f"--database-free-part={part}/{parts}: of the tests that cannot reach a database, only part {part} "
                f"of {parts} runs here")
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
