"""Weft settings, read from the environment in this one place.

Defaults are safe for a laptop; production secrets have no default. ``make run`` writes a
``.env`` with fresh random keys on first use, which is read here when present.
"""

from datetime import timedelta
from pathlib import Path

import environ
from csp import constants as csp
from django.core.exceptions import ImproperlyConfigured

from config.conf import weft_from_environment
from observability.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("WEFT_SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured("Set WEFT_SECRET_KEY (make run writes one into .env for you).")

# Earlier secret keys, still accepted for signatures while sessions and stored secrets move over.
SECRET_KEY_FALLBACKS = env.list("WEFT_SECRET_KEY_FALLBACKS", default=[])

# Encrypts secrets at rest (app secrets, provider keys); django-cryptography also signs each stored
# value with SECRET_KEY. After changing either key, run `manage.py rotate_field_key` with the old
# one in WEFT_FIELD_ENCRYPTION_KEY_PREVIOUS or WEFT_SECRET_KEY_FALLBACKS: see README "Rotating keys".
FIELD_ENCRYPTION_KEY = env.str("WEFT_FIELD_ENCRYPTION_KEY", default="")
if not FIELD_ENCRYPTION_KEY:
    raise ImproperlyConfigured("Set WEFT_FIELD_ENCRYPTION_KEY (make run writes one into .env).")
CRYPTOGRAPHY_KEY = FIELD_ENCRYPTION_KEY
CRYPTOGRAPHY_SALT = "weft-field-encryption"
# The previous key, only while `manage.py rotate_field_key` re-encrypts the stored secrets.
FIELD_ENCRYPTION_KEY_PREVIOUS = env.str("WEFT_FIELD_ENCRYPTION_KEY_PREVIOUS", default="")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "channels",
    "django_celery_beat",
    # Counts failed sign-ins and locks out by username and by address (AXES_* below).
    "axes",
    "accounts",
    "licensing",
    "alerts",
    "hooks",
    "workflows",
    "agents",
    "history",
    "templates.apps.WorkflowTemplatesConfig",
    "console",
    "observability",
]

MIDDLEWARE = [
    # First: answers /healthz, /readyz and /metrics itself, and times, counts and traces the rest.
    "observability.middleware.ObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every answer (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a sign-in refused by the lockout into its 429 page (accounts/lockout.py).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # config/templates: the API docs pages without inline scripts or other origins.
        "DIRS": [BASE_DIR / "config" / "templates"],
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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'weft.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    (BASE_DIR / "var").mkdir(exist_ok=True)
    # WAL and a busy timeout let the server, the in-process engine and beat share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
else:
    # A pool (psycopg_pool, through Django's "pool" option) when DATABASE_POOL_MAX_SIZE is set, as
    # the Procfile sets it: a process's threads (gunicorn's, a run's journal thread) then borrow an
    # open connection instead of opening one each (a PostgreSQL backend per connection: ~3 ms).
    # Without it, 0 keeps no connection between requests and tasks (the default).
    # psycopg prepares a statement that a connection has executed this many times, so PostgreSQL plans
    # it once: only the statements that repeat with server-side binding (config.db.prepared_cursor:
    # a run's journal batches), as Django's own cursors bind on the client. Empty: never (a pooler in
    # transaction mode, such as PgBouncer's, needs that).
    prepare_threshold = env.str("DATABASE_PREPARE_THRESHOLD", default="5")
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        int(prepare_threshold) if prepare_threshold else None
    )
    pool_max_size = env.int("DATABASE_POOL_MAX_SIZE", default=0)
    if pool_max_size > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, pool_max_size),
            "max_size": pool_max_size,
            # A thread that finds every connection lent out waits this long, then fails its query.
            "timeout": env.float("DATABASE_POOL_TIMEOUT_S", default=10.0),
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django returns the connection to the pool instead
        # No query before each loan (a round trip per request and per run): the pool drops a
        # connection that broke while lent, and renews each after max_lifetime (an hour).
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# django-axes first: it refuses a locked-out sign-in before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG
# Large node and run outputs (workflows/execution/large_outputs.py, docs/large-outputs.md): files
# under var/outputs by default; S3-compatible storage (MinIO...) when a bucket is named, which
# needs django-storages[s3] (requirements/s3.in).
if env.str("WEFT_OUTPUTS_S3_BUCKET", default=""):
    STORAGES["outputs"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("WEFT_OUTPUTS_S3_BUCKET"),
            "endpoint_url": env.str("WEFT_OUTPUTS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("WEFT_OUTPUTS_S3_REGION", default="") or None,
            "default_acl": "private",
            "querystring_auth": True,
        },
    }
else:
    STORAGES["outputs"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": env.path("WEFT_OUTPUTS_ROOT", default=BASE_DIR / "var" / "outputs")},
    }

LOGIN_URL = "admin:login"

# --- Weft's tunables: config/conf.py lists each (default, type, variable); platform/env.example ---
# documents them. Code reads them through config.conf.weft_settings.
WEFT = weft_from_environment(env.ENVIRON)
if WEFT["WORKER_USER_SHARE"] is not None and WEFT["WORKER_USER_SHARE"] < 1:
    raise ImproperlyConfigured("WEFT_WORKER_USER_SHARE must be at least 1 (unset: half of the worker's concurrency).")

# --- Redis: broker, channel layer, shared counters. Unset means embedded mode. ---------------
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not REDIS_URL

if REDIS_URL:
    # Redis pub/sub: an event is published once and each server process fans it out to its own
    # websocket clients (the list-based layer stores one copy per client, 200 round trips for 200
    # clients). Delivery is at most once; a client that misses an event replays it from run_events.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Copied into the database by the scheduler: resume or end runs whose worker is gone (every
# WEFT_ENGINE_REAPER_INTERVAL_S), purge old runs (every WEFT_RETENTION_INTERVAL_S); the embedded
# engine's intervals too.
CELERY_BEAT_SCHEDULE = {
    "weft-runs-reap": {"task": "workflows.runs_reap", "schedule": WEFT["ENGINE"]["REAPER_INTERVAL_S"]},
    "weft-retention-purge": {"task": "history.retention_purge", "schedule": WEFT["RETENTION_INTERVAL_S"]},
    "weft-usage-sweep": {"task": "history.usage_sweep", "schedule": 60.0},
    # run_events' monthly partitions, created months ahead (workflows/partitions.py).
    "weft-run-event-partitions": {"task": "workflows.run_event_partitions_ensure", "schedule": 3600.0},
    # Every schedule's ticks, from one entry (workflows/schedules/services.py), and their results.
    "weft-schedules-fire": {"task": "workflows.schedules_fire_due", "schedule": WEFT["SCHEDULES"]["TICK_INTERVAL_S"]},
    "weft-schedules-sync": {"task": "workflows.schedules_sync", "schedule": 30.0},
    # Notification retries whose task was lost, and those a dead worker left sending (alerts/).
    "weft-alerts-deliveries-sweep": {"task": "alerts.deliveries_sweep", "schedule": 60.0},
}
# Longer than the longest run, so that a run's message is not redelivered while it is running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("WEFT_BROKER_VISIBILITY_TIMEOUT_S", default=6 * 3600)}

# --- Email (run notifications, alerts/): printed to the console unless a backend is configured ---
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="weft@localhost")
# For EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend:
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

# --- The API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: one way to send a body, and one place that checks it can be stored.
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.StrictJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exceptions.exception_handler",
    # Calls per client address to the endpoints anyone can reach (config/api/throttling.py).
    "DEFAULT_THROTTLE_RATES": {
        "auth_token": env.str("WEFT_THROTTLE_AUTH_TOKEN", default="30/min"),
        "app": env.str("WEFT_THROTTLE_APP", default="6000/min"),
        # Failed app authentications per address: past it, no credentials from there are tried.
        "app_auth_failure": env.str("WEFT_THROTTLE_APP_AUTH_FAILURE", default="30/min"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

# The largest request body read (bytes), as nginx's client_max_body_size in DEPLOY.md: over it the
# API answers 413 `request_too_large` (config/api/parsers.py, config/api/exceptions.py).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("WEFT_REQUEST_MAX_BYTES", default=10 * 1024 * 1024)

# A token ends after WEFT_TOKEN_TTL_HOURS without use (each use pushes its end back); a user holds
# at most WEFT_TOKEN_LIMIT_PER_USER, the least recently used giving way to a new sign-in
# (accounts/services.py token_create).
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_TTL": timedelta(hours=env.float("WEFT_TOKEN_TTL_HOURS", default=24 * 7)),
    "AUTO_REFRESH": True,
    "TOKEN_LIMIT_PER_USER": env.int("WEFT_TOKEN_LIMIT_PER_USER", default=20),
}
if REST_KNOX["TOKEN_LIMIT_PER_USER"] < 1:
    raise ImproperlyConfigured("WEFT_TOKEN_LIMIT_PER_USER must be at least 1.")

# Sign-in lockout (django-axes) for the console's /login/, /admin/login/ and POST /api/v1/auth/token/:
# after WEFT_LOGIN_FAILURE_LIMIT failures for one username (from any address), or from one address
# (for any username), that username or address is refused for WEFT_LOGIN_COOLOFF_MINUTES; a 429.
AXES_FAILURE_LIMIT = env.int("WEFT_LOGIN_FAILURE_LIMIT", default=10)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_COOLOFF_TIME = timedelta(minutes=env.float("WEFT_LOGIN_COOLOFF_MINUTES", default=15))
# Tries during a lockout do not extend it: it ends a cool-off after it began.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
# The address is REMOTE_ADDR, which config/proxy.py sets from a trusted proxy only.
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
# Failures are kept (AccessAttempt, in the admin); successful sign-ins are not logged one by one.
AXES_DISABLE_ACCESS_LOG = True

SPECTACULAR_SETTINGS = {
    "TITLE": "Weft API",
    "DESCRIPTION": "Build, publish and run AI-agent workflows.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: the docs load nothing from
    # other origins (see CONTENT_SECURITY_POLICY).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SessionWorkflowStatusEnum": "agents.models.SessionWorkflowStatus",
        "MessageRoleEnum": "agents.models.MessageRole",
        "WorkflowMemberRoleEnum": "workflows.models.WorkflowMemberRole",
        "RunStatusEnum": "workflows.models.RunStatus",
        "EnabledStatusEnum": "licensing.models.EnabledStatus",
        "WorkflowStatusEnum": "workflows.models.WorkflowStatus",
        "TaskStatusEnum": "workflows.models.TaskStatus",
        "ScheduleStatusEnum": "workflows.models.ScheduledWorkflowStatus",
        "ScheduleLastExecutionStatusEnum": "workflows.models.ScheduledWorkflowExecutionStatus",
    },
}

# --- Security: strict unless DEBUG; `check --deploy` passes with real values. ----------------
# Every page loads scripts only from this origin, and an inline script only with the request's
# nonce (`<script nonce="{{ request.csp_nonce }}">`). Styles may be inline: Redoc and the console's
# graph set style attributes, and a style cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF, csp.NONCE],
        "style-src": [csp.SELF, csp.UNSAFE_INLINE],
        "img-src": [csp.SELF, "data:"],
        "font-src": [csp.SELF, "data:"],
        "connect-src": [csp.SELF],
        "worker-src": [csp.SELF, "blob:"],
        "object-src": [csp.NONE],
        "base-uri": [csp.SELF],
        "form-action": [csp.SELF],
        "frame-ancestors": [csp.NONE],
    }
}
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

# --- Observability (observability/): logs, /metrics; tracing reads the standard OTEL_* variables ---
# One JSON object per line in production, readable text on a laptop; each line names its run,
# node and trace when it has them.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or text.")
LOGGING = logging_config(level=env.str("LOG_LEVEL", default="INFO"), log_format=LOG_FORMAT)
# /metrics answers a bearer of this token, or a client in these networks; neither set: 404.
METRICS_TOKEN = env.str("WEFT_METRICS_TOKEN", default="")
METRICS_ALLOW = env.list("WEFT_METRICS_ALLOW", default=[])
