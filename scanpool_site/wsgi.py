"""The web server's entry point: gunicorn's workers (``docker/entrypoint.sh web``) load ``application`` from here.

Everything loaded by then (modules, settings, URL patterns, model and serializer classes) lives as long as the
worker. ``gc.freeze()`` moves those objects out of the garbage collector's sight, so a full collection walks only
what requests made since, not the application's 86,712 objects (the count the API benchmark prints;
tests/test_wsgi.py checks they are frozen). In the API benchmark a full collection falling in a round of requests
took 70-87 ms before, 9-13 ms with the application frozen (docs/benchmarks.md). What is frozen is never collected:
nothing loaded at start-up is meant to go away."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scanpool_site.settings")
application = get_wsgi_application()
gc.freeze()
