"""Settings for the shop's marketing automation.

Everything that differs between a laptop and production comes from environment variables;
README.md has the table. With no variables set this runs embedded: SQLite + the django-q2
ORM broker + email to files under var/mail.
"""

import os
from pathlib import Path

from django.utils.translation import gettext_lazy as _

from config.env import database_from_url, envbool, envint, envsecret, persistent_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", "false")
# SECRET_KEY (or SECRET_KEY_FILE) from the environment; otherwise a random key made once for
# this installation and kept in var/secret_key (never a key written in the code).
SECRET_KEY = envsecret("SECRET_KEY") or persistent_secret(VAR_DIR / "secret_key")

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
    "segments.middleware.MachineEndpointMiddleware",  # the events API skips the rest (B2)
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
            # wal_autocheckpoint: copy the WAL back every 10,000 pages (40 MB), not every 1,000. Random
            # index inserts dirty a page per row and index, so at the default a checkpoint (with its
            # fsync) followed nearly every 500-event insert; at 1M events that halved the write rate
            # (7.6k -> 14k rows/s, one writer). cache_size: 32 MB per connection instead of 2 MB.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000; "
                            "PRAGMA wal_autocheckpoint=10000; PRAGMA cache_size=-32768;",
        }
    )
    # segments/ingest/locks.py: after short writes a per-process thread checkpoints the write-ahead log
    # outside the writer's turn (B2: 13.5k -> 14.8k events/s at 1M). Tests turn it off (a thread still
    # pending after a test ends would find the database closed to it) except the one that checks it.
    SQLITE_BACKGROUND_CHECKPOINTS = True
    # A file, not :memory:, so the django-q2 cluster started by tests sees the test database.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getenv('PYTEST_XDIST_WORKER', 'main')}.sqlite3")}
else:
    # Persistent connections: the django-q2 ORM broker closes "old" connections on every
    # broker call, so CONN_MAX_AGE=0 reconnects per enqueue/dequeue/ack (37 tasks/s vs 589).
    # segments/checks.py warns when this is set to 0 (benchmark B6 shows the difference).
    _db["CONN_MAX_AGE"] = envint("CONN_MAX_AGE", "600")
    _db["CONN_HEALTH_CHECKS"] = True
    # No JIT: segment queries (correlated EXISTS over 1M events) are costed above jit_above_cost, and
    # compiling them took 1.2 s of a 1.8 s query (B3 "nested and/or"); a URL ?options=... overrides this.
    _db.setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Task queue (django-q2) ------------------------------------------------------------------
# ORM broker by default (at-least-once delivery, nothing else to run); Q_BROKER_URL=redis://...
# switches to Redis. retry must exceed timeout plus queue wait, or a slow task runs twice.
Q_CLUSTER = {
    "name": os.getenv("Q_NAME", "shop"),
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

# Cache (the public forms' rate limits): per process by default; CACHE_URL=redis://... shares it
# between web processes, and a Redis broker URL is used for it when CACHE_URL is not set.
CACHE_URL = os.getenv("CACHE_URL", Q_BROKER_URL if Q_BROKER_URL.startswith("redis") else "")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
                      "KEY_PREFIX": "shop"}
          if CACHE_URL.startswith("redis") else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Behind a reverse proxy: how many X-Forwarded-For entries our own proxies add (0 = use REMOTE_ADDR).
TRUSTED_PROXY_HOPS = envint("TRUSTED_PROXY_HOPS", "0")

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

# Compliance -------------------------------------------------------------------------------
# Every rule about WHETHER a message may go (compliance/gate.py). compliance/README.md has the
# table of variables. The anymail webhook secret is ANYMAIL_WEBHOOK_SECRET="user:password".
COMPLIANCE = {
    # Double opt-in for email sign-ups from forms; tokens in the confirmation link expire.
    "DOUBLE_OPT_IN": envbool("COMPLIANCE_DOUBLE_OPT_IN", "true"),
    "DOI_SOURCES": [s.strip() for s in os.getenv("COMPLIANCE_DOI_SOURCES", "form").split(",") if s.strip()],
    "DOI_TOKEN_DAYS": envint("COMPLIANCE_DOI_TOKEN_DAYS", "7"),
    "DOI_MAX_PER_DAY": envint("COMPLIANCE_DOI_MAX_PER_DAY", "3"),
    # Public forms that send email, per client (IP, IPv6 /64) and hour: (requests, seconds); 0 = off.
    "PUBLIC_RATE_LIMITS": {"signup": (envint("COMPLIANCE_SIGNUPS_PER_HOUR", "20"), 3600),
                           "confirm_resend": (envint("COMPLIANCE_RESENDS_PER_HOUR", "10"), 3600)},
    # Keyed hash for the suppression list (survives erasure). Set it once in production and never
    # change it: the hashes of erased/complaining people would stop matching.
    "HASH_PEPPER": envsecret("COMPLIANCE_HASH_PEPPER") or f"pepper:{SECRET_KEY}",
    # Optional mailto: alternative in List-Unsubscribe, e.g. unsubscribe@shop.example.
    "UNSUBSCRIBE_MAILTO": os.getenv("COMPLIANCE_UNSUBSCRIBE_MAILTO", ""),
    # Soft bounces: suppressed from marketing after LIMIT within WINDOW days.
    "SOFT_BOUNCE_LIMIT": envint("COMPLIANCE_SOFT_BOUNCE_LIMIT", "3"),
    "SOFT_BOUNCE_WINDOW_DAYS": envint("COMPLIANCE_SOFT_BOUNCE_WINDOW_DAYS", "15"),
    # Sunset: no open/click for DAYS (90-180) -> sunset segment; still nothing after GRACE days -> suppressed.
    "SUNSET_DAYS": min(180, max(90, envint("COMPLIANCE_SUNSET_DAYS", "120"))),
    "SUNSET_GRACE_DAYS": envint("COMPLIANCE_SUNSET_GRACE_DAYS", "30"),
    # Marketing frequency caps per contact and channel.
    "CAPS": {
        "email": {"day": envint("COMPLIANCE_EMAIL_CAP_DAY", "1"), "week": envint("COMPLIANCE_EMAIL_CAP_WEEK", "3")},
        "sms": {"day": envint("COMPLIANCE_SMS_CAP_DAY", "1"), "week": envint("COMPLIANCE_SMS_CAP_WEEK", "2")},
        "push": {"day": envint("COMPLIANCE_PUSH_CAP_DAY", "1"), "week": envint("COMPLIANCE_PUSH_CAP_WEEK", "3")},
    },
    # Allowed marketing send windows in the contact's own time zone ("" = any time).
    "SEND_WINDOWS": {
        "email": os.getenv("COMPLIANCE_EMAIL_SEND_WINDOW", ""),
        "sms": os.getenv("COMPLIANCE_SMS_SEND_WINDOW", "08:00-21:00"),
        "push": os.getenv("COMPLIANCE_PUSH_SEND_WINDOW", "08:00-21:00"),
    },
    # Reputation guard: pause marketing email when a rate over the rolling window crosses a limit.
    "BOUNCE_RATE_LIMIT": float(os.getenv("COMPLIANCE_BOUNCE_RATE_LIMIT", "0.02")),
    "COMPLAINT_RATE_LIMIT": float(os.getenv("COMPLIANCE_COMPLAINT_RATE_LIMIT", "0.001")),
    "REPUTATION_WINDOW_DAYS": envint("COMPLIANCE_REPUTATION_WINDOW_DAYS", "7"),
    "REPUTATION_MIN_SENDS": envint("COMPLIANCE_REPUTATION_MIN_SENDS", "100"),
}
# Staff see a warning on every admin page while marketing email is paused for reputation.
MIDDLEWARE.append("compliance.middleware.ReputationWarningMiddleware")

# Channels -----------------------------------------------------------------------------------
# How messages are delivered (channels/). Email uses EMAIL_BACKEND above (anymail for any ESP).
CHANNELS = {
    # Messages per delivery task: one SMTP connection / ESP session per batch.
    "BATCH_SIZE": envint("CHANNELS_BATCH_SIZE", "200"),
    # Email connections per batch on PostgreSQL, each with its own database connection (a thread):
    # a message's `sending` commit waits for the WAL flush and its SMTP commands for the server's
    # replies, and another connection sends meanwhile. SQLite (one writer) always uses one.
    "SEND_STREAMS": envint("CHANNELS_SEND_STREAMS", "2"),
    # A provider look-up by Message-ID (dotted path to a callable, see channels.services.
    # messages_reconcile) that can say for certain a message was never taken: `unknown` messages
    # it reports absent are sent again, those it reports accepted are settled. Empty: none.
    "PROVIDER_LOOKUP": os.getenv("CHANNELS_PROVIDER_LOOKUP", ""),
    # anymail batch sending (merge_data): ESPs whose on-the-fly merge fields can carry a whole
    # rendered subject/text/HTML per recipient, as anymail's esp_name -> merge-field syntax. Those
    # get up to ESP_BATCH_SIZE messages per API call (Mailgun allows 1,000 recipients per call);
    # any other backend sends one message per call over one connection (channels/delivery.py).
    "ESP_BATCH_MERGE_FIELDS": {"Mailgun": "%recipient.{}%"},
    "ESP_BATCH_SIZE": envint("CHANNELS_ESP_BATCH_SIZE", "500"),
    # Messages per second per channel, all workers together, e.g. CHANNELS_RATE_LIMITS="email=14,sms=1"
    # (the provider's limit). The first send creates the admin's "sending rate limit" row from this;
    # from then on the admin's value is the one used. No entry: no limit.
    "RATE_LIMITS": {k.strip(): float(v) for k, v in (p.split("=", 1) for p in
                    os.getenv("CHANNELS_RATE_LIMITS", "").split(",") if "=" in p)},
    # SMS: "file" (JSON under var/sms, default), "console" or "twilio".
    "SMS_BACKEND": os.getenv("SMS_BACKEND", "file"),
    "TWILIO_ACCOUNT_SID": os.getenv("TWILIO_ACCOUNT_SID", ""),
    "TWILIO_AUTH_TOKEN": envsecret("TWILIO_AUTH_TOKEN"),
    "TWILIO_MESSAGING_SERVICE_SID": os.getenv("TWILIO_MESSAGING_SERVICE_SID", ""),
    "SMS_STATUS_CALLBACK": os.getenv("SMS_STATUS_CALLBACK", ""),
    # Sender per country, e.g. SMS_SENDERS="US=+14155550100,MY=SHOPMY,default=+14155550100"
    "SMS_SENDERS": dict(p.split("=", 1) for p in os.getenv("SMS_SENDERS", "").split(",") if "=" in p),
    # Price per segment by country for the cost estimate, e.g. SMS_PRICES="US=0.0079,MY=0.05,default=0.05"
    "SMS_PRICES": {"US": "0.0079", "MY": "0.0500", "JP": "0.0750", "default": "0.0500",
                   **dict(p.split("=", 1) for p in os.getenv("SMS_PRICES", "").split(",") if "=" in p)},
    "SMS_PRICE_CURRENCY": os.getenv("SMS_PRICE_CURRENCY", "USD"),
    # Web push (VAPID): generate a key pair once with `vapid --gen` (py-vapid) and keep it.
    "VAPID_PUBLIC_KEY": os.getenv("VAPID_PUBLIC_KEY", ""),
    "VAPID_PRIVATE_KEY": envsecret("VAPID_PRIVATE_KEY"),
    "VAPID_SUBJECT": os.getenv("VAPID_SUBJECT", "mailto:shop@localhost"),
}

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
# The events API and the tracker announce what they stored (events_ingested: segments, triggers) once per
# this many seconds per web process, for all requests meanwhile, instead of inside each request.
# 0 announces inside each request (segments/ingest/announcer.py).
INGEST_ANNOUNCE_SECONDS = float(os.getenv("INGEST_ANNOUNCE_SECONDS", "0.25"))
# The storefront tracker's public write key (it is in the shop's HTML, so it can only add events).
TRACKER_WRITE_KEY = os.getenv("TRACKER_WRITE_KEY", "")
# Name of the first-party cookie holding the visitor's anonymous id.
TRACKER_COOKIE = os.getenv("TRACKER_COOKIE", "sm_aid")
# Files with more data rows than this are imported by a django-q2 task instead of in the request.
IMPORT_BACKGROUND_ROWS = envint("IMPORT_BACKGROUND_ROWS", "2000")
# Rows written per transaction by the importer (one bulk INSERT/UPDATE per chunk).
IMPORT_CHUNK_ROWS = envint("IMPORT_CHUNK_ROWS", "2000")
# Files of at least this many bytes are parsed in a child process while the importer writes the
# previous chunk (segments/ingest/pipeline.py); about 2,500 rows of our template. -1: never.
IMPORT_PARSE_PROCESS_BYTES = envint("IMPORT_PARSE_PROCESS_BYTES", "262144")
# Keep SQLite connections open between requests, as the PostgreSQL ones are: opening one costs
# about 1 ms and closing the last one checkpoints the WAL (about 1.5 ms), which halved the events
# API's throughput (benchmark B2). CONN_MAX_AGE=0 restores Django's default.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("CONN_MAX_AGE", envint("CONN_MAX_AGE", "600"))
