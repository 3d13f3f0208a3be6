"""Gatehouse settings: one file, driven by environment variables.

Every variable is listed with its default in `.env.example`. Values that are
required in production, or malformed anywhere, stop the process at start.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent

# --- core -------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = (
    env_str("SECRET_KEY", required=not DEBUG) or "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"
)
if not DEBUG and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# The public address of this dashboard, used in emails and links.
SITE_URL = env_url("SITE_URL", "http://127.0.0.1:8000", schemes=("http", "https")).rstrip("/")
SITE_NAME = "Gatehouse"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
    "csp",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "project",
    "accounts",
    "webhooks",
    "endpoints",
    "analytics",
    "billing",
    "alerts",
]

MIDDLEWARE = [
    "project.middleware.RequestIdMiddleware",
    "project.middleware.DatabaseUnavailableMiddleware",
    "project.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "project.middleware.PermissionsPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

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
                "project.context_processors.site",
                "accounts.context_processors.teams",
                "alerts.context_processors.traffic_stops",
            ],
        },
    },
]

# --- data stores ------------------------------------------------------------

DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "pgsql"), required=True)
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5, minimum=1)
# PostgreSQL's JIT compiles any query its planner costs high, e.g. a dashboard sum over 100k rollup rows: the
# 20-30 ms it spends compiling never pays back on queries that run in tens of ms (bench/dashboard.py).
_pg_options = DATABASES["default"]["OPTIONS"].get("options", "")
DATABASES["default"]["OPTIONS"]["options"] = f"{_pg_options} -c jit=off".strip()
# Behind PgBouncer in transaction pooling mode (DATABASE_TRANSACTION_POOLING=1) a server connection is ours for one
# transaction only, so nothing may outlive one: psycopg's prepared statements (PgBouncer 1.18 does not track them)
# and server-side cursors are off, and no startup options are sent (PgBouncer refuses them: turn jit off on the
# database instead, ALTER DATABASE … SET jit = off). Advisory locks are transaction-scoped here already. LISTEN needs
# a session of its own: the config feed's long-poll listens on DATABASE_DIRECT_URL, PostgreSQL itself (README,
# "More than one machine").
DATABASE_TRANSACTION_POOLING = env_bool("DATABASE_TRANSACTION_POOLING", False)
if DATABASE_TRANSACTION_POOLING:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None
    DATABASES["default"]["OPTIONS"].pop("options")
DATABASE_DIRECT_URL = env_url("DATABASE_DIRECT_URL", DATABASE_URL, schemes=("postgres", "postgresql", "pgsql"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"), required=True)


def _celery_url_for(redis_url: str) -> str:
    """Celery spells a Redis unix socket `redis+socket://`; redis-py spells it `unix://`."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return redis_url


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "gatehouse"),
        "TIMEOUT": 300,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# --- Celery -----------------------------------------------------------------

CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", _celery_url_for(REDIS_URL), schemes=("redis", "rediss", "redis+socket", "amqp", "amqps")
)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300, minimum=1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With acks_late a task whose worker died is redelivered after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 900, minimum=60)}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
# How often ingestion triggers an aggregation run. Fewer, larger runs share each rollup upsert among more
# records (bench/ingest.py: 1 s gave 85k records/s end to end, 5 s gave 103k); charts lag by up to this much.
AGGREGATION_INTERVAL_SECONDS = env_int("AGGREGATION_INTERVAL_SECONDS", 5, minimum=1, maximum=60)
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "worker-heartbeat": {"task": "project.tasks.worker_heartbeat", "schedule": 30.0},
    # The sweeper: rolls up every committed batch not yet aggregated (ingestion also nudges on commit).
    "aggregate-pending": {"task": "analytics.tasks.aggregate_pending", "schedule": float(AGGREGATION_INTERVAL_SECONDS)},
    # Hours and days are recomputed from minutes right after each aggregation run (the open hour paced, the open day
    # every minute: analytics.aggregation); this sweeps what a run left, e.g. hours that closed since.
    "compact-rollups": {"task": "analytics.tasks.compact_rollups", "schedule": 15.0},
    "usage-partitions": {"task": "analytics.tasks.maintain_partitions", "schedule": 3600.0},
    "prune-config-changes": {"task": "endpoints.tasks.prune_config_changes", "schedule": 3600.0},
    # API keys that expire within a week: a key.expiring webhook event, once per expiry.
    "warn-expiring-keys": {"task": "endpoints.tasks.warn_expiring_keys", "schedule": crontab(minute="*/15")},
    # Billing: overdue teams and used-up Free allowances suspend (and restore) keys; usage goes to Stripe's meter
    # hourly; our totals are checked against Stripe's nightly; webhook events stuck unprocessed are retried.
    "billing-enforce": {"task": "billing.tasks.enforce_all", "schedule": 60.0},
    "billing-report-usage": {"task": "billing.tasks.report_usage", "schedule": crontab(minute="*/5")},
    "billing-reconcile": {"task": "billing.tasks.reconcile", "schedule": crontab(hour=3, minute=30)},
    "billing-sweep-events": {"task": "billing.tasks.sweep_events", "schedule": 300.0},
    # Budgets that stopped traffic: a new period lifts them (no traffic reaches a stopped scope to trigger it).
    "budgets-sweep": {"task": "alerts.tasks.budgets_sweep", "schedule": 5.0},
    # Health alert rules: resolve those whose window emptied (no traffic, so no aggregation run evaluates them).
    "alert-rules-sweep": {"task": "alerts.tasks.alert_rules_sweep", "schedule": 30.0},
    # Outgoing webhooks whose retry is due but whose queued task never ran (lost, or the broker restarted).
    "webhooks-deliver-due": {"task": "webhooks.tasks.deliver_due", "schedule": 60.0},
}

# --- authentication ---------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
# Optional: people may look around first; creating API keys requires a verified address.
ACCOUNT_EMAIL_VERIFICATION = "optional"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_CHANGE_EMAIL = True  # a new address replaces the old one only once it is verified
# Changing the email address (or other sensitive account settings) asks for the password again unless the person
# signed in within the last 5 minutes; security changes (email, password) are notified to the address concerned —
# an email change to the old address, so a stolen session cannot quietly take the account over.
ACCOUNT_REAUTHENTICATION_REQUIRED = True
ACCOUNT_REAUTHENTICATION_TIMEOUT = 300
ACCOUNT_EMAIL_NOTIFICATIONS = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Gatehouse] "
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_PREVENT_ENUMERATION = True
# Lockout: 10 failed sign-ins a minute per address; 5 per account in 15 minutes. Same message either way.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/15m/key"}
ACCOUNT_DEFAULT_HTTP_PROTOCOL = urlsplit(SITE_URL).scheme  # links in emails follow the public address
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Gatehouse"

# --- HTTP security ----------------------------------------------------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many proxies of ours append to X-Forwarded-For: the client's address is that many entries from the end (a
# client can write anything before them). Behind the TLS proxy: 1 unless set; directly exposed: 0, so the header
# is ignored. Sign-in lockouts per address, the audit log and rate limits all read the address this way.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1 if BEHIND_TLS_PROXY else 0, minimum=0, maximum=5)
if TRUSTED_PROXY_COUNT and not BEHIND_TLS_PROXY:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT needs BEHIND_TLS_PROXY=1 (a proxy of ours in front)")
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# Strict CSP: nothing inline, nothing from other origins (but Stripe's hosted pages as form targets).
# Front-end files are vendored.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        # Upgrading and managing the card post to us, and we redirect to Stripe's hosted pages: browsers
        # check a form's redirects against form-action too.
        "form-action": [SELF, "https://checkout.stripe.com", "https://billing.stripe.com"],
        "frame-ancestors": [NONE],
    }
}
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

# --- static files -----------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT: Path | None = BASE_DIR / ".data" / "staticfiles"  # None in tests: nothing is collected
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- email ------------------------------------------------------------------


EMAIL_URL = env_url(
    "EMAIL_URL", "console://" if DEBUG else None, schemes=("console", "file", "locmem", "smtp", "smtps"), required=True
)
_email = urlsplit(EMAIL_URL)
EMAIL_BACKEND = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "smtps": "django.core.mail.backends.smtp.EmailBackend",
}[_email.scheme]
EMAIL_FILE_PATH = _email.path if _email.scheme == "file" else None
EMAIL_HOST = _email.hostname or "localhost"
EMAIL_PORT = _email.port or (465 if _email.scheme == "smtps" else 587)
EMAIL_HOST_USER = _email.username or ""
EMAIL_HOST_PASSWORD = _email.password or ""
EMAIL_USE_SSL = _email.scheme == "smtps"
EMAIL_USE_TLS = _email.scheme == "smtp" and "tls=0" not in _email.query
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Gatehouse <no-reply@gatehouse.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Stripe -----------------------------------------------------------------

# Empty means "payments not connected": billing pages show locally rated figures.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = env_str("STRIPE_PUBLISHABLE_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
# The Billing Meter usage is reported to (meter events carry its event name; reconciliation reads its id).
STRIPE_METER_EVENT_NAME = env_str("STRIPE_METER_EVENT_NAME", "gatehouse_units")
STRIPE_METER_ID = env_str("STRIPE_METER_ID")
STRIPE_TIMEOUT_SECONDS = env_int("STRIPE_TIMEOUT_SECONDS", 10, minimum=1, maximum=80)
# Prefixes every idempotency key and meter event identifier sent to Stripe, so installations sharing a Stripe account
# (staging beside production) never collide. Default: the public host name. Never change it with usage in flight.
_site_host = re.sub(r"[^a-z0-9]+", "-", urlsplit(SITE_URL).netloc.lower()).strip("-")
STRIPE_NAMESPACE = env_str("STRIPE_NAMESPACE", "") or _site_host[:40].strip("-")
if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", STRIPE_NAMESPACE):
    raise ImproperlyConfigured("STRIPE_NAMESPACE must be 1-40 lowercase letters, digits or dashes")
STRIPE_MAX_RETRIES = env_int("STRIPE_MAX_RETRIES", 3, minimum=0, maximum=10)
# Days after a failed payment before the team's keys stop (a banner and emails say so meanwhile).
BILLING_GRACE_DAYS = env_int("BILLING_GRACE_DAYS", 7, minimum=0, maximum=90)

# --- usage -------------------------------------------------------------------

# Raw relays are kept this many days (whole daily partitions are dropped); rollups outlive them.
RAW_RETENTION_DAYS = env_int("RAW_RETENTION_DAYS", 14, minimum=1, maximum=35)
MINUTE_ROLLUP_RETENTION_DAYS = env_int("MINUTE_ROLLUP_RETENTION_DAYS", 7, minimum=1, maximum=35)
HOUR_ROLLUP_RETENTION_DAYS = env_int("HOUR_ROLLUP_RETENTION_DAYS", 400, minimum=30)
# Aggregation falling further behind than this is reported as lagging (ingestion keeps accepting).
AGGREGATION_LAG_WARNING_SECONDS = env_int("AGGREGATION_LAG_WARNING_SECONDS", 60, minimum=1)
# Outgoing requests to user-chosen URLs (webhooks) never reach private, loopback or metadata addresses; this lets
# loopback (and plain http) through, for a receiver on a developer's machine and for tests. Never in production.
OUTGOING_ALLOW_LOOPBACK = env_bool("OUTGOING_ALLOW_LOOPBACK", False)
# Bearer token for Prometheus to scrape /metrics; staff sessions may read it too. Empty: staff only.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- REST API ---------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ManagementTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "project.api.exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON in, JSON out: form encodings cannot say "null" or an empty list, so they are refused (415).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["project.throttling.PrincipalRateThrottle"],
}
# Team API rate limits (429 with Retry-After beyond them): per management token, per signed-in user, per address.
API_THROTTLE_RATES = {
    "token": env_str("API_THROTTLE_TOKEN", "600/min"),
    "user": env_str("API_THROTTLE_USER", "300/min"),
    "anon": env_str("API_THROTTLE_ANON", "60/min"),
}
# Per-team limits, so one team (or one leaked token) cannot bloat the gateway's config feed: live endpoints, keys
# that work (revoked ones do not count) and active management tokens. A key rotation is always allowed.
TEAM_MAX_ENDPOINTS = env_int("TEAM_MAX_ENDPOINTS", 200, minimum=1)
TEAM_MAX_KEYS = env_int("TEAM_MAX_KEYS", 1000, minimum=1)
TEAM_MAX_TOKENS = env_int("TEAM_MAX_TOKENS", 50, minimum=1)
TEAM_MAX_BUDGETS = env_int("TEAM_MAX_BUDGETS", 200, minimum=1)  # set on the Budgets page (caps' budgets don't count)
# Config feed long-polls (?wait=) a process holds at once: each holds a web thread (and a PostgreSQL connection of
# its own) for up to 30 s, so keep it below the threads per process (gunicorn --threads); 0 turns waiting off.
CONFIG_FEED_MAX_WAITERS = env_int("CONFIG_FEED_MAX_WAITERS", 2, minimum=0, maximum=1000)
SPECTACULAR_SETTINGS = {
    "TITLE": "Gatehouse API",
    "DESCRIPTION": (
        "The team REST API (authenticate with `Authorization: Bearer gmt_…`, a management token created "
        "on the team's API tokens page) and the gateway contract (v1). Errors are "
        '`{"code": …, "detail": …}` with a 4xx status.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "project.api.add_common_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "accounts.models.Role",
        "GrantableRoleEnum": "accounts.permissions.GRANTABLE_ROLE_CHOICES",
    },
}

# --- i18n -------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- logging ----------------------------------------------------------------

LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be 'json' or 'text'")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "project.logging.RequestIdFilter"},
        "redact_secrets": {"()": "project.logging.RedactSecretsFilter"},
    },
    "formatters": {
        "json": {"()": "project.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The request log line comes from our middleware, with timing and the request id.
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
    },
}
