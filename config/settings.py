"""Settings for the shop's marketing automation.

Everything that differs between a laptop and production comes from environment variables;
README.md has the table. With no variables set this runs embedded: SQLite + the django-q2
ORM broker + email to files under var/mail.
"""

import os
from pathlib import Path

from django.utils.translation import gettext_lazy as _

from config.env import database_from_url, envbool, envint, envsecret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)
# pytest sets PYTEST_VERSION while it runs: tests need no secrets from the environment.
TESTING = bool(os.getenv("PYTEST_VERSION"))

DEBUG = envbool("DEBUG", "false")
SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING or envbool("ALLOW_INSECURE_SECRET", "false")):
        raise RuntimeError("SECRET_KEY is not set. Set it (or DEBUG=true for local development).")
    SECRET_KEY = "insecure-dev-only-key-never-use-in-production"  # noqa: S105 (refused above unless DEBUG/tests)

ALLOWED_HOSTS = [h.strip() for h in os.getenv("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.getenv("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
# Absolute base URL used in emails and public links (unsubscribe, preferences, tracking).
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "config.apps.ShopAdminConfig",  # django.contrib.admin with our dashboard as the index
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "anymail",
    "phonenumber_field",
    "import_export",
    # Ours, lowest first: a lower app never imports a higher one.
    "segments",
    "compliance",
    "channels",
    "automation",
    "bench",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "segments.middleware.ShopTimezoneMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# Database -------------------------------------------------------------------------------
# SQLite by default, tuned for a web process and several qcluster workers at once:
# IMMEDIATE transactions take the write lock up front, so a read-then-write transaction
# waits up to `timeout` instead of failing with "database is locked" (measured: 288 of 300
# concurrent tasks failed with Django's defaults, 0 with these settings; tests/test_sqlite_concurrency.py).
DATABASE_URL = os.getenv("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL, BASE_DIR)}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}}
_db = DATABASES["default"]
if _db["ENGINE"].endswith("sqlite3"):
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        }
    )
    # A file, not :memory:, so the django-q2 cluster started by tests sees the test database.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getenv('PYTEST_XDIST_WORKER', 'main')}.sqlite3")}
else:
    # Persistent connections: the django-q2 ORM broker closes "old" connections on every
    # broker call, so CONN_MAX_AGE=0 reconnects per enqueue/dequeue/ack (37 tasks/s vs 589).
    # segments/checks.py warns when this is set to 0 (benchmark B6 shows the difference).
    _db["CONN_MAX_AGE"] = envint("CONN_MAX_AGE", "600")
    _db["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Task queue (django-q2) ------------------------------------------------------------------
# ORM broker by default (at-least-once delivery, nothing else to run); Q_BROKER_URL=redis://...
# switches to Redis. retry must exceed timeout plus queue wait, or a slow task runs twice.
Q_CLUSTER = {
    "name": os.getenv("Q_CLUSTER_NAME", "shop"),
    "workers": envint("Q_WORKERS", "2"),
    "timeout": envint("Q_TIMEOUT", "300"),
    "retry": envint("Q_RETRY", "360"),
    "max_attempts": envint("Q_MAX_ATTEMPTS", "5"),
    "queue_limit": envint("Q_QUEUE_LIMIT", "20"),
    "bulk": envint("Q_BULK", "10"),
    "poll": float(os.getenv("Q_POLL", "0.5")),
    "save_limit": envint("Q_SAVE_LIMIT", "250"),
    "catch_up": False,
    "log_level": os.getenv("Q_LOG_LEVEL", "WARNING"),
    "sync": envbool("Q_SYNC", "false"),
}
Q_BROKER_URL = os.getenv("Q_BROKER_URL", "")
if Q_BROKER_URL.startswith("redis"):
    Q_CLUSTER["redis"] = Q_BROKER_URL
else:
    Q_CLUSTER["orm"] = "default"

# Email ---------------------------------------------------------------------------------------
# Default: each message written to a file under var/mail (nothing leaves the machine).
# Production: EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend plus ANYMAIL_* keys, or
# django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST/EMAIL_PORT/...
EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = os.getenv("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envsecret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "false")
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", "30")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "shop@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ANYMAIL = {
    key[len("ANYMAIL_"):]: envsecret(key)
    for key in os.environ
    if key.startswith("ANYMAIL_") and not key.endswith("_FILE")
}

# Internationalisation --------------------------------------------------------------------
LANGUAGE_CODE = os.getenv("LANGUAGE_CODE", "en")
LANGUAGES = [("en", _("English")), ("ja", _("Japanese")), ("ms", _("Malay"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"  # storage and server zone; the shop's own zone is segments.Shop.timezone
PHONENUMBER_DEFAULT_REGION = os.getenv("PHONENUMBER_DEFAULT_REGION") or None
PHONENUMBER_DB_FORMAT = "E164"

# Static files ------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Security -------------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", "false")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_TLS_PROXY", "false") else None
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(5 * 1024 * 1024))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "WARNING")},
}

# Import-export: the admin import/export buttons are for staff with the model permissions.
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
IMPORT_EXPORT_SKIP_ADMIN_LOG = True

# Ingestion --------------------------------------------------------------------------------
# CSV imports, the events API, shop webhooks and the storefront tracker (segments/ingest/README.md).
# Uploaded import files and their error reports are kept here (Django's default file storage).
MEDIA_ROOT = Path(os.getenv("MEDIA_ROOT", VAR_DIR / "media"))
# Shopify app's client secret: X-Shopify-Hmac-Sha256 is verified with it. Empty refuses every webhook.
SHOPIFY_WEBHOOK_SECRET = envsecret("SHOPIFY_WEBHOOK_SECRET")
# The secret entered in WooCommerce > Settings > Advanced > Webhooks (X-WC-Webhook-Signature).
WOOCOMMERCE_WEBHOOK_SECRET = envsecret("WOOCOMMERCE_WEBHOOK_SECRET")
# POST /api/v1/events: most events per request, and the largest body accepted (413 above it).
INGEST_MAX_BATCH = envint("INGEST_MAX_BATCH", "1000")
INGEST_MAX_BODY_BYTES = envint("INGEST_MAX_BODY_BYTES", str(1024 * 1024))
# The storefront tracker's public write key (it is in the shop's HTML, so it can only add events).
TRACKER_WRITE_KEY = os.getenv("TRACKER_WRITE_KEY", "")
# Name of the first-party cookie holding the visitor's anonymous id.
TRACKER_COOKIE = os.getenv("TRACKER_COOKIE", "sm_aid")
# Files with more data rows than this are imported by a django-q2 task instead of in the request.
IMPORT_BACKGROUND_ROWS = envint("IMPORT_BACKGROUND_ROWS", "2000")
# Rows written per transaction by the importer (one bulk INSERT/UPDATE per chunk).
IMPORT_CHUNK_ROWS = envint("IMPORT_CHUNK_ROWS", "2000")
# Keep SQLite connections open between requests, as the PostgreSQL ones are: opening one costs
# about 1 ms and closing the last one checkpoints the WAL (about 1.5 ms), which halved the events
# API's throughput (benchmark B2). CONN_MAX_AGE=0 restores Django's default.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("CONN_MAX_AGE", envint("CONN_MAX_AGE", "600"))
