"""Settings shared by every profile; everything environment-specific is read here through one ``env``."""

import datetime
from pathlib import Path

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    "scrm",
    "stores",
    "members",
    "loyalty",
    "campaigns",
    "guides",
    "api",
    # Reads from every app above, so it comes last (see README "HQ dashboard").
    "dashboard",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "scrm.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "scrm.middleware.ChosenLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "scrm.middleware.SessionPolicyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "scrm.middleware.AccessDeniedAuditMiddleware",
    "scrm.middleware.AdminOnlyForHqMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "scrm.urls"
WSGI_APPLICATION = "scrm.wsgi.application"

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

# PostgreSQL is the only engine. `make demo` / `make test` start an embedded one and set DATABASE_URL
# when it is unset (see scrm/embedded.py).
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/scrm")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in, lockout and sessions ------------------------------------------------------------------
# django-axes checks every sign-in (the /login/ page and the admin's) before the password is tried:
# after SCRM_LOGIN_FAILURE_LIMIT failures for one username from one address, that pair is locked out
# for SCRM_LOGIN_LOCKOUT_MINUTES. Counting per pair keeps an attacker from locking a colleague out
# from elsewhere; the failures are rows in the database, so they survive a restart of Redis.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "guides.backends.StaffLoginBackend",  # employee number or mobile + password
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("SCRM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env.int("SCRM_LOGIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_RESET_ON_SUCCESS = True
# The lockout lasts its stated time from the moment it starts; tries during it do not extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Successful sign-ins are on the audit trail already (scrm/signals.py); no second log of them.
AXES_DISABLE_ACCESS_LOG = True
# axes' own admin pages are English-only and would delete lockouts outside the audit trail. A lockout
# lifts itself after the pause; `manage.py axes_reset_username` lifts one earlier.
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False  # no start-up banner in every command's output
# Without django-ipware installed, axes keys on REMOTE_ADDR, the address the audit trail records too;
# keep it that way: X-Forwarded-For is the client's to forge unless a trusted proxy rewrites it.

# Sessions end a fixed time after sign-in (scrm.security.start_session): a shift for store staff, whose
# phones are often shared, a working day for HQ. Store staff sessions also end when the browser closes.
SCRM_STAFF_SESSION_HOURS = env.int("SCRM_STAFF_SESSION_HOURS", default=8)
SCRM_HQ_SESSION_HOURS = env.int("SCRM_HQ_SESSION_HOURS", default=12)
SESSION_COOKIE_AGE = max(SCRM_STAFF_SESSION_HOURS, SCRM_HQ_SESSION_HOURS) * 60 * 60
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # no page script reads the token: forms carry it, the cookie stays hidden

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / ".local" / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=BASE_DIR / ".local" / "media")
MEDIA_URL = "media/"

# Celery: Redis is the broker; the database is the source of truth, so results are not kept.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
# A separate queue name lets several deployments (or test runs) share one Redis.
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", default="scrm")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * 60 * 60}
CELERY_BEAT_SCHEDULE_FILENAME = str(
    env.path("CELERY_BEAT_SCHEDULE_FILENAME", default=BASE_DIR / ".local" / "celerybeat-schedule")
)

# The shared cache (rate limits, login lockout counters) lives in the same Redis as the broker.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env("CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="scrm"),
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The integrations API (api/) answers every error in one JSON shape, translated, never a trace.
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
}
# OpenAPI schema of /api/v1/; the reference page serves Swagger UI from our own static files.
SPECTACULAR_SETTINGS = {
    "TITLE": "SCRM API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SalesChannelEnum": "members.models.Channel",
        "ContactChannelEnum": "members.models.ContactChannel",
    },
}

IMPORT_EXPORT_SKIP_ADMIN_ACTION_EXPORT_UI = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    # django-axes logs every successful sign-in at INFO; failures and lockouts are warnings.
    "loggers": {"axes": {"level": env("AXES_LOG_LEVEL", default="WARNING")}},
}

# Business thresholds. Lifecycle: no purchase for DORMANT days makes a buyer dormant, LOST days lost.
SCRM_DORMANT_AFTER_DAYS = env.int("SCRM_DORMANT_AFTER_DAYS", default=90)
SCRM_LOST_AFTER_DAYS = env.int("SCRM_LOST_AFTER_DAYS", default=180)
# Admin lists on tables past this many rows show an estimated total instead of an exact count(*).
SCRM_EXACT_COUNT_LIMIT = env.int("SCRM_EXACT_COUNT_LIMIT", default=10_000)
# Retention: members with no activity (joining, last purchase) for this many days are anonymised nightly.
SCRM_RETENTION_INACTIVE_DAYS = env.int("SCRM_RETENTION_INACTIVE_DAYS", default=3 * 365)
# Imports: refused above these limits before any cell is parsed.
SCRM_IMPORT_MAX_BYTES = env.int("SCRM_IMPORT_MAX_BYTES", default=100 * 1024 * 1024)
SCRM_IMPORT_MAX_ROWS = env.int("SCRM_IMPORT_MAX_ROWS", default=1_000_000)
SCRM_IMPORT_MAX_UNPACKED_BYTES = env.int("SCRM_IMPORT_MAX_UNPACKED_BYTES", default=30 * SCRM_IMPORT_MAX_BYTES)
SCRM_IMPORT_MAX_RATIO = env.int(
    "SCRM_IMPORT_MAX_RATIO", default=200
)  # unpacked / packed size of one zip member
# Import jobs: one still checking or importing with no progress for this long, and no worker holding
# it, is re-queued (at most SCRM_IMPORT_MAX_ATTEMPTS runs) or failed; job files (uploads, invalid-row
# workbooks, exports) are deleted this many days after the job was created.
SCRM_IMPORT_STALL_SECONDS = env.int("SCRM_IMPORT_STALL_SECONDS", default=15 * 60)
SCRM_IMPORT_MAX_ATTEMPTS = env.int("SCRM_IMPORT_MAX_ATTEMPTS", default=3)
SCRM_JOB_FILES_KEEP_DAYS = env.int("SCRM_JOB_FILES_KEEP_DAYS", default=30)
