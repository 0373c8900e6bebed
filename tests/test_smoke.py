import pytest
from django.conf import settings


def test_redis_is_the_throwaway_server(redis_conn):
    assert redis_conn.ping()
    assert redis_conn.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert settings.REDIS_URL.startswith("redis://127.0.0.1:")


@pytest.mark.django_db
def test_database_is_migrated():
    from pools.models import Pool

    Pool.objects.create(name="smoke")
    assert Pool.objects.filter(name="smoke").count() == 1
