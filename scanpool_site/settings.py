"""scanpool settings: every knob comes from the environment (see README "Configuration")."""

from __future__ import annotations

import ipaddress
import math
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from scanpool_site.local_state import (
    ensure_private_dir,
    generate_django_secret_key,
    generate_fernet_key,
    protect_sqlite,
    read_or_create_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SCANPOOL_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected an integer") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r}: must be at least {minimum} (default {default})")
    return value


_RATE_PERIODS = ("s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day")


def env_rate(name: str, default: str) -> str:
    """A throttle rate, ``N/period`` (period: s, min, hour or day): refused here, at start-up, rather than as a
    server error at every API request."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    count, _, period = raw.strip().partition("/")
    if not (count.isascii() and count.isdigit()) or period not in _RATE_PERIODS:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected requests per period, e.g. 60/min "
                                   "(period: s, min, hour or day)")
    return f"{int(count)}/{period}"


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a number") from exc
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ImproperlyConfigured(f"{name}={raw!r}: must be a number of at least {minimum or 0} (default {default})")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_seconds_list(name: str, default: list[int]) -> list[int]:
    """A comma-separated list of whole seconds (0 or more), e.g. ``1,2,4``."""
    items = env_list(name, [str(x) for x in default])
    try:
        values = [int(x) for x in items]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={os.environ.get(name)!r}: expected whole seconds separated by commas, "
                                   "e.g. 1,2,4") from exc
    if any(v < 0 for v in values):
        raise ImproperlyConfigured(f"{name}={os.environ.get(name)!r}: seconds cannot be negative")
    return values


DEBUG = env_bool("DJANGO_DEBUG", False)  # `make run` (scripts/run.sh) turns it on; production leaves it off

# --- Secrets. Production (DJANGO_DEBUG=0) must set both; a development install generates its own into var/
# (0600, directory 0700) on first use, so no key anybody can read in the source protects its data.
GENERATE_SECRET_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
GENERATE_FERNET_KEY = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
SCANPOOL_SECRET_KEYS = env_list("SCANPOOL_SECRET_KEYS")  # Fernet keys, newest first (docs/configuration.md)
SCANPOOL_GENERATED_SECRETS: list[str] = []  # which of the two came from var/ (the deploy check warns)
if not DEBUG:
    _missing = [name for name, value in (("DJANGO_SECRET_KEY", SECRET_KEY),
                                         ("SCANPOOL_SECRET_KEYS", SCANPOOL_SECRET_KEYS)) if not value]
    if _missing:
        raise ImproperlyConfigured(
            f"{' and '.join(_missing)} must be set when DJANGO_DEBUG=0 (production). Generate "
            f"DJANGO_SECRET_KEY with: {GENERATE_SECRET_KEY}; SCANPOOL_SECRET_KEYS with: {GENERATE_FERNET_KEY}. "
            "For a development install set DJANGO_DEBUG=1 (as `make run` does) to use keys generated in var/."
        )
else:
    ensure_private_dir(VAR_DIR)
    if not SECRET_KEY:
        SECRET_KEY = read_or_create_secret(VAR_DIR / "django-secret-key", generate_django_secret_key)
        SCANPOOL_GENERATED_SECRETS.append("DJANGO_SECRET_KEY")
    if not SCANPOOL_SECRET_KEYS:
        SCANPOOL_SECRET_KEYS = [read_or_create_secret(VAR_DIR / "fernet-key", generate_fernet_key)]
        SCANPOOL_GENERATED_SECRETS.append("SCANPOOL_SECRET_KEYS")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_rq",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI files served from our own static files (no CDN)
    "pools",
    "scanners",
    "tasks",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # serves the admin's static files when DEBUG=0 (collectstatic)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "scanpool_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "scanpool_site.wsgi.application"

# --- Database: SQLite under var/ by default, PostgreSQL (or anything dj-database-url knows) via DATABASE_URL.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'scanpool.sqlite3'}")
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0)
# A kept connection is checked before each request reuses it: after a database restart or an idle timeout the
# request gets a new connection instead of a 500 (Django's CONN_HEALTH_CHECKS; one cheap check per request).
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=DATABASE_CONN_MAX_AGE,
                                              conn_health_checks=DATABASE_CONN_MAX_AGE != 0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, workers) share the file: WAL lets readers and one writer work at once,
    # IMMEDIATE transactions take the write lock up front (no upgrade deadlocks), and a generous
    # timeout waits for the lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_int("SQLITE_TIMEOUT", 30, minimum=1),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file too (not :memory:), so worker subprocesses can share the test database.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("SCANPOOL_TEST_DB", str(VAR_DIR / f"test-{os.getpid()}.sqlite3")),
    }
    # The database holds encrypted secrets and every result: 0600, like its -wal/-shm files.
    if DATABASES["default"]["NAME"]:
        protect_sqlite(Path(DATABASES["default"]["NAME"]))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(VAR_DIR / "static")))

# --- Security (production: DJANGO_DEBUG=0)
# Error pages/mails: also hide passwords inside URL settings (REDIS_URL, DATABASE_URL, RQ_QUEUES).
DEFAULT_EXCEPTION_REPORTER_FILTER = "scanpool_site.error_reports.ScanpoolExceptionReporterFilter"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)

# --- Redis / RQ. Per-pool queues are created at run time (see docs/architecture.md, "Queues").
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Jobs carry ids only: JSON, never pickle (also for anything that goes through django-rq's get_queue).
RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600, "SERIALIZER": "rq.serializers.JSONSerializer"}}
RQ_SHOW_ADMIN_LINK = False  # django-rq's dashboard is not mounted: see scanpool_site/urls.py
# Django's cache, for anything that uses it, is shared by every web process: Redis. (scanpool's own code does
# not use it: the API throttle keeps its counts in Redis itself, atomically; see tasks/api/throttles.py.)
# Short socket timeouts: a hung Redis must not hang a request.
CACHES = {"default": {
    "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "scanpool-cache",
    "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
}}

# --- /metrics (Prometheus): a bearer token and/or client networks; with neither, loopback clients only.
SCANPOOL_METRICS_TOKEN = env_str("SCANPOOL_METRICS_TOKEN")
SCANPOOL_METRICS_ALLOWED_IPS = env_list("SCANPOOL_METRICS_ALLOWED_IPS")  # CIDRs or addresses
for _entry in SCANPOOL_METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_entry, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"SCANPOOL_METRICS_ALLOWED_IPS entry {_entry!r} is not an IP address or network "
            "(write e.g. 10.0.0.5 or 10.0.0.0/24, comma-separated)"
        ) from None

# --- scanpool
SCANPOOL_RESULTS_DIR = Path(env_str("SCANPOOL_RESULTS_DIR", str(VAR_DIR / "results")))
SCANPOOL_RETRY_INTERVALS = env_seconds_list("SCANPOOL_RETRY_INTERVALS", [1, 2, 4])
SCANPOOL_BREAKER_THRESHOLD = env_int("SCANPOOL_BREAKER_THRESHOLD", 5, minimum=1)
SCANPOOL_BREAKER_COOLDOWN = env_int("SCANPOOL_BREAKER_COOLDOWN", 300, minimum=1)
SCANPOOL_HTTP_CONNECT_TIMEOUT = env_float("SCANPOOL_HTTP_CONNECT_TIMEOUT", 5.0, minimum=0.1)
SCANPOOL_HTTP_READ_TIMEOUT = env_float("SCANPOOL_HTTP_READ_TIMEOUT", 30.0, minimum=0.1)
SCANPOOL_MAX_RESULT_BYTES = env_int("SCANPOOL_MAX_RESULT_BYTES", 2 * 1024**3, minimum=1)  # cap of one results download
SCANPOOL_RECONCILE_INTERVAL = env_int("SCANPOOL_RECONCILE_INTERVAL", 60, minimum=1)
SCANPOOL_DELETE_FINISHED_SCANS = env_bool("SCANPOOL_DELETE_FINISHED_SCANS", False)
SCANPOOL_FAILURE_TTL = env_int("SCANPOOL_FAILURE_TTL", 30 * 24 * 3600, minimum=1)
# TTL of finished tasks, from their last access (manage.py cleanup_tasks, run daily by the workers).
SCANPOOL_TTL_COMPLETED_DAYS = env_int("SCANPOOL_TTL_COMPLETED_DAYS", 7, minimum=1)
SCANPOOL_TTL_FAILED_DAYS = env_int("SCANPOOL_TTL_FAILED_DAYS", 30, minimum=1)  # failed, timeout, cancelled
# Seconds between live dashboard updates.
SCANPOOL_DASHBOARD_REFRESH = env_int("SCANPOOL_DASHBOARD_REFRESH", 10, minimum=1)
SCANPOOL_CLEANUP_AT = (env_str("SCANPOOL_CLEANUP_AT") or "03:30").strip()  # UTC time of the daily cleanup_tasks
# Checked here: a bad value used to start everything and only make each worker log a traceback at every pool refresh,
# the daily clean-up never scheduled.
_cleanup_at = SCANPOOL_CLEANUP_AT.split(":")
if not (len(_cleanup_at) == 2 and all(part.isascii() and part.isdigit() for part in _cleanup_at)
        and len(_cleanup_at[1]) == 2 and int(_cleanup_at[0]) <= 23 and int(_cleanup_at[1]) <= 59):
    raise ImproperlyConfigured(f"SCANPOOL_CLEANUP_AT={SCANPOOL_CLEANUP_AT!r}: expected a UTC time HH:MM, e.g. 03:30")
if os.environ.get("SCANPOOL_TASK_TTL_DAYS"):  # retired: refused, never ignored (manage.py and gunicorn say it in one
    raise ImproperlyConfigured(  # line: scanpool_site.preflight)
        "SCANPOOL_TASK_TTL_DAYS is retired: unset it, and set SCANPOOL_TTL_COMPLETED_DAYS (default 7) and "
        "SCANPOOL_TTL_FAILED_DAYS (default 30, failed/timeout/cancelled) instead"
    )
# Dispatch engine (docs/operations.md "Settings")
SCANPOOL_STEP_TIMEOUT = env_int("SCANPOOL_STEP_TIMEOUT", 300, minimum=1)  # RQ job timeout of launch/poll/stop steps
SCANPOOL_FINISH_TIMEOUT = env_int("SCANPOOL_FINISH_TIMEOUT", 3600, minimum=1)  # export + ingest of one scan
SCANPOOL_STALE_AFTER = env_int("SCANPOOL_STALE_AFTER", 120, minimum=1)  # reconcile restarts a poll chain idle this long
# A timed-out or cancelled scan keeps its slot until a poll sees it inactive on the scanner, at most this long
SCANPOOL_STOP_GRACE = env_int("SCANPOOL_STOP_GRACE", 300, minimum=0)
SCANPOOL_WORKER_REFRESH = env_int("SCANPOOL_WORKER_REFRESH", 30, minimum=1)  # an all-pools worker re-reads the pools
SCANPOOL_TIMEOUT_MIN_SECONDS = env_int("SCANPOOL_TIMEOUT_MIN_SECONDS", 60, minimum=1)
SCANPOOL_TIMEOUT_MAX_SECONDS = env_int("SCANPOOL_TIMEOUT_MAX_SECONDS", 30 * 24 * 3600,
                                       minimum=SCANPOOL_TIMEOUT_MIN_SECONDS)
if SCANPOOL_TIMEOUT_MAX_SECONDS < SCANPOOL_TIMEOUT_MIN_SECONDS:  # the default maximum is below the minimum given
    raise ImproperlyConfigured(f"SCANPOOL_TIMEOUT_MIN_SECONDS={os.environ['SCANPOOL_TIMEOUT_MIN_SECONDS']!r}: must "
                               f"be at most SCANPOOL_TIMEOUT_MAX_SECONDS ({SCANPOOL_TIMEOUT_MAX_SECONDS})")
SCANPOOL_MAX_TARGETS = env_int("SCANPOOL_MAX_TARGETS", 1000, minimum=1)  # entries per scan
SCANPOOL_MAX_TARGET_ADDRESSES = env_int("SCANPOOL_MAX_TARGET_ADDRESSES", 65536, minimum=1)  # addresses per scan
# Client policies (docs/security.md "Client policies"): a scan pending approval is cancelled after this long.
SCANPOOL_APPROVAL_TTL = env_int("SCANPOOL_APPROVAL_TTL", 24 * 3600, minimum=1)
WORKER_POOLS = env_list("WORKER_POOLS")  # pools a scanworker serves; empty = all

# --- REST API v1 (docs/api.md)
SCANPOOL_DEFAULT_POOL = env_str("SCANPOOL_DEFAULT_POOL")  # pool of a submission that names none ("" = the only pool)
SCANPOOL_API_SUBMIT_RATE = env_rate("SCANPOOL_API_SUBMIT_RATE", "60/min")  # submissions per client
SCANPOOL_API_READ_RATE = env_rate("SCANPOOL_API_READ_RATE", "1200/min")  # every other request per client
# Status reads estimate a queued task's wait from a per-process snapshot of its pool at most this old (0: fresh).
SCANPOOL_API_WAIT_CACHE_SECONDS = env_float("SCANPOOL_API_WAIT_CACHE_SECONDS", 2.0, minimum=0)
# The largest upload POST /api/v1/validate/ takes.
SCANPOOL_API_MAX_UPLOAD_BYTES = env_int("SCANPOOL_API_MAX_UPLOAD_BYTES", 256 * 1024 * 1024, minimum=1)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tasks.api.permissions.ModelPermission"],
    "DEFAULT_THROTTLE_CLASSES": ["tasks.api.throttles.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"submit": SCANPOOL_API_SUBMIT_RATE, "read": SCANPOOL_API_READ_RATE},
    "EXCEPTION_HANDLER": "tasks.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "tasks.api.schema.ScanpoolAutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "tasks.api.negotiation.StrictFormatNegotiation",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "scanpool API",
    "DESCRIPTION": "Submit, follow, cancel, retry and read vulnerability scans on pools of scanners. See docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["tasks.api.permissions.Authenticated"],  # IsAuthenticated, with the API's hint
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {"TaskStatusEnum": "tasks.models.states.TaskStatus"},
}

# Any case, as scanpool-mcp reads the same variable ("debug" was a traceback from logging.config in every process).
LOG_LEVEL = (env_str("SCANPOOL_LOG_LEVEL") or "INFO").strip().upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"SCANPOOL_LOG_LEVEL={os.environ['SCANPOOL_LOG_LEVEL']!r}: expected one of DEBUG, INFO, "
                               "WARNING, ERROR, CRITICAL")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # RQ's three "job done" lines per job (a poll every few seconds per scan) only at DEBUG.
    "filters": {"rq_job_chatter": {"()": "scanpool_site.log_filters.RqJobChatter"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "rq.worker": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False, "filters": ["rq_job_chatter"]},
        # urllib3's DEBUG lines carry whole request paths, export tokens included (the adapter logs them masked).
        "urllib3": {"level": "INFO"},
    },
}
