"""Settings of the sandbox service, all read from the environment.

The defaults run the whole service on one machine with nothing installed:
SQLite under var/, django-q2's ORM broker, the local sandbox backend and the
local git host. README.md lists every variable.
"""

from pathlib import Path

import dj_database_url

from config import environment as env
from config import logs
from config.scopes import ALL_SCOPES, DEFAULT_SCOPES_SETTING

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.text("VAR_DIR") or BASE_DIR / "var")

DEBUG = env.flag("DEBUG", default=False)
SECRET_KEY = env.secret("SECRET_KEY", debug=DEBUG, development_value="dev-secret-key-not-for-production")
# HMAC pepper for API keys: a database dump alone cannot be used to check guessed keys.
API_KEY_PEPPER = env.secret("API_KEY_PEPPER", debug=DEBUG, development_value="dev-api-key-pepper")
# The scopes of a key made without naming any (config/scopes.py); keys made before scopes existed hold every one.
API_KEY_DEFAULT_SCOPES = env.choices("API_KEY_DEFAULT_SCOPES", DEFAULT_SCOPES_SETTING, ALL_SCOPES)
env.announce_development_values([name for name in ("SECRET_KEY", "API_KEY_PEPPER") if DEBUG and not env.text(name)])
ALLOWED_HOSTS = env.words("ALLOWED_HOSTS", "localhost 127.0.0.1 [::1]" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    env.stop("ALLOWED_HOSTS is not set; list the host names the service answers to, or DEBUG=1 for development"
             " (DEBUG is off)")
CSRF_TRUSTED_ORIGINS = env.words("CSRF_TRUSTED_ORIGINS")
# JSON under /api/ (config/errors.py), Django's page elsewhere.
CSRF_FAILURE_VIEW = "config.errors.csrf_failure"
# Proxies in front of the service that append the client's address to
# X-Forwarded-For (accounts/audit.py client_ip); 0 trusts no header at all.
TRUSTED_PROXY_COUNT = env.integer("TRUSTED_PROXY_COUNT", 0, minimum=0)

INSTALLED_APPS = [
    "config.apps.BackOfficeAdminConfig",  # django.contrib.admin with the back office's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "accounts",
    "orgs",
    "sandboxes",
    "webhooks",
    "config",  # the project itself: its migration creates the database cache's table
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "config.middleware.ApiBodySizeLimitMiddleware",
    "config.middleware.NulCharacterGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
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
            ],
        },
    },
]

DATABASE_URL = env.text("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
except ValueError as error:
    env.stop(f"DATABASE_URL cannot be read ({error}); e.g. postgres://user@127.0.0.1:5432/dbname")
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database host that does not answer fails the request in seconds
    # (a JSON 503, config/errors.py) instead of holding the worker.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.integer(
        "DATABASE_CONNECT_TIMEOUT", 5, minimum=1
    )
    # Parameters travel apart from the SQL, and a statement a connection has
    # run 5 times is prepared: PostgreSQL parses and plans it once per
    # connection instead of on every request. Off behind a pooler in
    # transaction mode that cannot keep prepared statements (PgBouncer before
    # 1.21, or without max_prepared_statements).
    # https://docs.djangoproject.com/en/5.2/ref/databases/#server-side-parameters-binding
    if env.flag("DATABASE_PREPARED_STATEMENTS", True):
        DATABASES["default"]["OPTIONS"].update(server_side_binding=True, prepare_threshold=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["ENGINE"] = "config.sqlite"
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web and worker write the same file: wait for the lock instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Dates and times on the admin's pages: to the second, with the time zone (config/timefmt.py).
FORMAT_MODULE_PATH = ["config.formats"]
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise serves the admin's and the API docs' assets (Swagger UI comes from
# the sidecar package, so /api/docs/ works offline). Without `collectstatic`
# it finds them in the installed apps.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Sandboxes -----------------------------------------------------------------
# `local`: a scratch folder per sandbox on the worker (development, no isolation);
# `docker`: a locked-down container per sandbox on the engine DOCKER_HOST names.
SANDBOX_BACKEND = env.choice("SANDBOX_BACKEND", "local", ("local", "docker"))
SANDBOX_DOCKER = env.docker_sandbox_settings() if SANDBOX_BACKEND == "docker" else None
SANDBOX_ROOT = Path(env.text("SANDBOX_ROOT") or VAR_DIR / "sandboxes")
SANDBOX_TEMPLATE_DIR = Path(env.text("SANDBOX_TEMPLATE_DIR") or BASE_DIR / "sandboxes" / "starter")
SANDBOX_COMMAND_TIMEOUT = env.integer("SANDBOX_COMMAND_TIMEOUT", 60, minimum=1)
GIT_HOST = env.choice("GIT_HOST", "local", ("local", "github"))
GIT_ROOT = Path(env.text("GIT_ROOT") or VAR_DIR / "git")
GITHUB = env.github_settings() if GIT_HOST == "github" else None
# What this deployment creates carries this id as its mark; only what carries
# it is ever deleted. Required with GitHub; the local git host's default is "local".
# Where snapshots live: `local` (SANDBOX_ROOT/snapshots, one host) or `s3`
# (one bucket that every host reaches; endpoint, region and credentials from
# boto3's own AWS_* variables or an instance role).
SNAPSHOT_STORE = env.choice("SNAPSHOT_STORE", "local", ("local", "s3"))
SANDBOX_DEPLOYMENT_ID = env.deployment_id(
    "SANDBOX_DEPLOYMENT_ID",
    required_by=" and ".join(filter(None, ["GIT_HOST=github" if GIT_HOST == "github" else "",
                                           "SNAPSHOT_STORE=s3" if SNAPSHOT_STORE == "s3" else ""])),
    default="local",
)
SNAPSHOT_S3 = env.snapshot_s3_settings() if SNAPSHOT_STORE == "s3" else None
SNAPSHOT_TTL = env.duration("SNAPSHOT_TTL", "7d")
# GET /api/sandboxes/file answers 413 for a larger file.
SANDBOX_FILE_MAX_BYTES = env.integer("SANDBOX_FILE_MAX_BYTES", 1024 * 1024, minimum=1)
# Live sandboxes (sandboxes/live.py): a running sandbox is stopped (with a
# snapshot) once idle this long since its start or last command.
SANDBOX_IDLE_TIMEOUT = env.duration("SANDBOX_IDLE_TIMEOUT", "30m")
# A command's stdout and stderr are each kept up to this many bytes.
SANDBOX_OUTPUT_MAX_BYTES = env.integer("SANDBOX_OUTPUT_MAX_BYTES", 50_000, minimum=1)
# The longest timeout_ms a command may ask for (a foreground command holds a
# web worker that long: gunicorn.conf.py gives its workers more).
SANDBOX_COMMAND_MAX_MS = env.integer("SANDBOX_COMMAND_MAX_MS", 300_000, minimum=1000)
# POST /api/sandboxes/files: the files' total size (decoded) and their number.
SANDBOX_UPLOAD_MAX_BYTES = env.integer("SANDBOX_UPLOAD_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
SANDBOX_UPLOAD_MAX_FILES = env.integer("SANDBOX_UPLOAD_MAX_FILES", 1000, minimum=1)
# The local backend runs a client's commands on this host itself, with no
# isolation: only in development (DEBUG=1), or where an operator says so.
SANDBOX_LOCAL_EXEC = env.choice("SANDBOX_LOCAL_EXEC", "unsafe" if DEBUG else "off", ("off", "unsafe"))
if not SANDBOX_TEMPLATE_DIR.is_dir():
    env.stop(f"SANDBOX_TEMPLATE_DIR {SANDBOX_TEMPLATE_DIR} is not a folder")

# A setup run gets this long in a worker; one still EXECUTING after it (plus a
# grace period) lost its worker and is failed by the sweep.
SETUP_RUN_TIMEOUT = env.integer("SETUP_RUN_TIMEOUT", 300, minimum=10)
SETUP_RUN_GRACE = env.integer("SETUP_RUN_GRACE", 60, minimum=0)
SETUP_RUN_STALE_AFTER = SETUP_RUN_TIMEOUT + SETUP_RUN_GRACE

# The weekly scheduled reconcile only reports unless this is on; read by the
# task each time it runs (sandboxes/tasks.py), never stored in the schedule.
RECONCILE_AUTOFIX = env.flag("RECONCILE_AUTOFIX", default=False)
# --- Webhooks (webhooks/) ------------------------------------------------------------
WEBHOOK_TIMEOUT = env.integer("WEBHOOK_TIMEOUT", 10, minimum=1)
WEBHOOK_EXPIRY_WARNING = env.duration("WEBHOOK_EXPIRY_WARNING", "24h")
WEBHOOK_RETRY_SCHEDULE = env.durations("WEBHOOK_RETRY_SCHEDULE", "5s 5m 30m 2h 8h 24h")
WEBHOOK_DISABLE_AFTER = env.duration("WEBHOOK_DISABLE_AFTER", "3d")
WEBHOOK_ALLOW_HTTP = env.flag("WEBHOOK_ALLOW_HTTP", default=False)
WEBHOOK_ALLOW_PRIVATE = env.flag("WEBHOOK_ALLOW_PRIVATE", default=False)

# --- Queue (django-q2) ----------------------------------------------------------
REDIS_URL = env.text("REDIS_URL")
Q_CLUSTER = {
    "name": env.text("QUEUE_NAME", "sandboxes"),
    "workers": env.integer("QUEUE_WORKERS", 2, minimum=1),
    "timeout": SETUP_RUN_TIMEOUT,
    # `retry` must exceed `timeout` (django-q2 docs): a task is only handed out
    # again once the worker that held it would have been stopped. The pipeline
    # claims its run once, so a second delivery returns without doing anything.
    "retry": SETUP_RUN_TIMEOUT + 30,
    # A task whose worker died (never acknowledged) is handed out once more;
    # a failed task (a failed setup run raises, sandboxes/tasks.py) is
    # acknowledged: it shows under the failed tasks and is never run again.
    "max_attempts": 2,
    "ack_failures": True,
    "catch_up": False,
    "label": "Queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
# How often the ORM broker asks the database for new tasks while its queue is
# empty: at django-q2's default of 0.2 s a setup waited 100 ms on average for
# a worker to pick it up (bench/latency.py: 130 to 140 ms on SQLite, about
# 25 ms at 0.03 s). The asks cost an idle cluster on SQLite about 7% of a core
# (1.5% at 0.2 s). Redis needs no poll: the worker waits in BLPOP, which
# answers as soon as a task is pushed.
# https://django-q2.readthedocs.io/en/master/configure.html#poll
Q_CLUSTER["poll"] = 0.03

# --- Cache (the API's rate limits) ------------------------------------------------
# Shared by every web process: Redis when there is one, else a table in the
# database (created by config/migrations, so `migrate` is enough). Keys are
# prefixed with the queue name, so services sharing one Redis keep apart.
# django-redis rather than Django's own Redis backend: it keeps one client per
# connection pool, where Django's builds a new one on every call, and its
# `incr` is one atomic script (accounts/throttling.py). A Redis that does not
# answer fails the request in seconds (a JSON 503) instead of holding the worker.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": Q_CLUSTER["name"],
                          "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "sandbox_cache",
                          "KEY_PREFIX": Q_CLUSTER["name"], "OPTIONS": {"MAX_ENTRIES": 10000}}}

# --- API ------------------------------------------------------------------------
API_MAX_BODY_BYTES = env.integer("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
# Bodies of paths that take more: an upload's files, base64-encoded (4 bytes
# for 3) in JSON, with room for the paths and the message.
API_BODY_LIMITS = {"/api/sandboxes/files": max(API_MAX_BODY_BYTES, SANDBOX_UPLOAD_MAX_BYTES * 4 // 3 + 1024 * 1024)}
# Django refuses to read a larger body; the middleware's limits come first.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_BODY_LIMITS.values())
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
# Added to every API view's permissions (config/api_input.py ApiView): the key holds the scope the view
# names for the method.
API_SCOPE_PERMISSION = "orgs.permissions.KeyHasScope"
# Requests per API key (accounts/throttling.py); None is no limit.
API_THROTTLE_RATES = {
    "setup": env.rate("THROTTLE_SETUP_RATE", "30/min"),
    "delete": env.rate("THROTTLE_DELETE_RATE", "30/min"),
    "renew": env.rate("THROTTLE_RENEW_RATE", "30/min"),
    # A live sandbox's commands, uploads and stops.
    "exec": env.rate("THROTTLE_EXEC_RATE", "600/min"),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sandbox API",
    "DESCRIPTION": "Set up and delete personal sandboxes: a git repository and an expiring snapshot per account.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "ENUM_NAME_OVERRIDES": {
        "SuccessStatusEnum": ["success"],
        "OperationStatusEnum": ["success", "error"],
        "ErrorStatusEnum": ["error"],
        "RunStatusEnum": "sandboxes.models.SetupRun.Status",
    },
    # Real values as examples (sandboxes/schema_examples.py), after the enums' own hook.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "sandboxes.schema_examples.add_examples"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Browser clients send the key in a header, never a cookie, so any origin may
# call the API unless CORS_ALLOWED_ORIGINS narrows it.
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOWED_ORIGINS = env.words("CORS_ALLOWED_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = not CORS_ALLOWED_ORIGINS
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "x-api-key", "x-request-id", "idempotency-key")
CORS_EXPOSE_HEADERS = ("x-request-id", "retry-after", "idempotent-replayed")

LOG_LEVEL = env.choice("LOG_LEVEL", "info", logs.LEVELS).upper()
LOG_FORMAT = env.choice("LOG_FORMAT", "plain", logs.FORMATS)
# django-q2 logs under the name "django-q" (django_q/conf.py): a line per task
# picked up and done, and per worker started; only its warnings and errors
# (a failed task) unless LOG_LEVEL=DEBUG.
LOGGING = logs.logging_config(level=LOG_LEVEL, log_format=LOG_FORMAT, levels={
    "django": LOG_LEVEL,
    "django.server": LOG_LEVEL,
    "django-q": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING",
})

# --- HTTPS ----------------------------------------------------------------------
# Production answers over HTTPS only, usually behind a proxy that terminates TLS
# and says so in a header (SECURE_PROXY_SSL_HEADER); `manage.py check --deploy`
# passes with the production environment README.md lists.
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_PROXY_SSL_HEADER = env.proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
if not DEBUG:
    SESSION_COOKIE_SECURE = env.flag("SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_SSL_REDIRECT = env.flag("SECURE_SSL_REDIRECT", default=True)
    # A load balancer's health check speaks plain HTTP to each instance.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.flag("SECURE_HSTS_PRELOAD", default=True)
