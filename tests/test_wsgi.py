"""The web server's entry point (scanpool_site/wsgi.py) loads the application, then freezes what it loaded out of
the garbage collector's walks: a full collection in a web worker then walks what requests made since, not the whole
application. Run in a fresh process with production settings, as gunicorn's worker imports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.benchmarks.children import production_env

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import gc, json, time
import scanpool_site.wsgi as wsgi
frozen, tracked = gc.get_freeze_count(), len(gc.get_objects())
started = time.perf_counter()
gc.collect()
print(json.dumps({"frozen": frozen, "tracked": tracked, "collect_ms": (time.perf_counter() - started) * 1000,
                  "app": type(wsgi.application).__name__}))
"""


def test_the_wsgi_module_freezes_the_loaded_application():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "scanpool_site.settings",
           "DJANGO_ALLOWED_HOSTS": "scanpool.example.com", **production_env()}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["app"] == "WSGIHandler"
    # Django, DRF, the models and URL patterns: tens of thousands of objects, all frozen; almost nothing left to walk.
    assert probe["frozen"] > 50_000, probe
    assert probe["tracked"] < 1_000, probe
