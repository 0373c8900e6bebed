"""Start-up check of the configuration, before Django's machinery runs: a configuration error (a retired variable,
a malformed value — every ``ImproperlyConfigured`` the settings raise while reading the environment) stops the
process with one line on stderr naming the variable and the fix, and exit status 1, instead of Django's traceback.

Called by ``manage.py`` (every command, the scan workers included) and by the web server's gunicorn configuration
(:mod:`scanpool_site.gunicorn_conf`, before any worker process starts). The settings module itself still raises
the error, so whatever else loads it (a test run, ``django-admin``) fails too: a bad configuration is never
silently ignored.
"""

from __future__ import annotations

import importlib
import os
import sys

from django.core.exceptions import ImproperlyConfigured

DEFAULT_SETTINGS = "scanpool_site.settings"


def load_settings_or_exit() -> None:
    """Import the settings module now (Django reuses it later); a configuration error: one line, exit 1."""
    module = os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS)
    try:
        importlib.import_module(module)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None
