"""Settings of the test run: a development install (``DJANGO_DEBUG=1``, keys generated in ``var/``).

``DJANGO_DEBUG`` defaults to off (production). pytest-django loads settings before any conftest runs, so
the test run's defaults are set here; subprocesses (workers, the emulator) inherit them. Tests of the
production behaviour start ``manage.py`` with an environment of their own (``tests/test_settings.py``).
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from scanpool_site.settings import *  # noqa: F403

# Tests count throttled requests in process memory; tests/test_api_throttle_shared.py covers the Redis cache
# that production uses (CACHES in scanpool_site/settings.py).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
