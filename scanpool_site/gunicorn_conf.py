"""gunicorn's configuration for the web server (``docker/entrypoint.sh web`` passes
``--config python:scanpool_site.gunicorn_conf``).

gunicorn imports this module in its master process before it starts any worker. A configuration error stops it
here with one line and exit status 1 (:mod:`scanpool_site.preflight`); without this check each worker failed to
load the application with Django's traceback and gunicorn stopped with "Worker failed to boot." (exit status 3).
Settings given on gunicorn's command line (bind, workers, timeout…) are not set here.
"""

from scanpool_site.preflight import load_settings_or_exit

load_settings_or_exit()
