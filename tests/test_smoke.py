import pytest
from django.conf import settings


def test_redis_is_the_throwaway_server(redis_conn):
    assert redis_conn.ping()
    assert redis_conn.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert settings.REDIS_URL.startswith("redis://:") and "@127.0.0.1:" in settings.REDIS_URL


def test_the_test_redis_requires_its_password(redis_server):
    """Like every scanpool Redis (make run, Docker): a client without the password can do nothing."""
    import redis

    anonymous = redis.Redis.from_url(redis_server.url_without_password)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    wrong = redis.Redis.from_url(redis_server.url.replace(redis_server.password, "wrong"))
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()


@pytest.mark.django_db
def test_database_is_migrated():
    from pools.models import Pool

    Pool.objects.create(name="smoke")
    assert Pool.objects.filter(name="smoke").count() == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://scanpool:s3cret@redis.example.com:6380/1", "rediss://scanpool:***@redis.example.com:6380/1"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redis_urls_are_shown_without_their_password(url, shown):
    from scanpool_site.redis_url import has_password, redacted

    assert redacted(url) == shown
    assert has_password(url) == ("s3cret" in url)


def test_error_reports_hide_passwords_inside_url_settings(settings):
    """Django's debug page and error mails list the settings: REDIS_URL / DATABASE_URL carry passwords."""
    from django.views.debug import get_default_exception_reporter_filter

    settings.DATABASE_URL = "postgres://scanpool:db-s3cret@db.example.com:5432/scanpool"
    shown = get_default_exception_reporter_filter().get_safe_settings()
    password = settings.REDIS_URL.split(":", 2)[2].split("@")[0]
    assert password and password not in repr(shown)
    assert "db-s3cret" not in repr(shown)
    assert shown["REDIS_URL"].startswith("redis://:***@127.0.0.1:")
    assert shown["RQ_QUEUES"]["default"]["URL"] == shown["REDIS_URL"]
    assert shown["DATABASE_URL"] == "postgres://scanpool:***@db.example.com:5432/scanpool"


def test_every_queue_uses_the_json_serializer():
    """Jobs carry ids only: nothing that builds a queue (pool queues, django-rq's get_queue) unpickles Redis data."""
    import django_rq
    from rq.serializers import JSONSerializer

    from tasks.queues import SERIALIZER, queue_for

    assert SERIALIZER is JSONSerializer
    assert queue_for("scanpool-x").serializer is JSONSerializer
    assert django_rq.get_queue("default").serializer is JSONSerializer
