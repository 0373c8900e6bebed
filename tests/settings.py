"""Settings of the test run: a development install (``DJANGO_DEBUG=1``, keys generated in ``var/``).

``DJANGO_DEBUG`` defaults to off (production). pytest-django loads settings before any conftest runs, so
the test run's defaults are set here; subprocesses (workers, the emulator) inherit them. Tests of the
production behaviour start ``manage.py`` with an environment of their own (``tests/test_settings.py``).
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from scanpool_site.settings import *  # noqa: F403

# Django's cache (unused by scanpool's own code) stays in process memory in tests. The API throttle counts in
# the test Redis, as in production (tests/test_api_throttle_shared.py).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
