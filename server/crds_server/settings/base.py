"""Settings common to every kind of CRDS server.

Only the variables a server cannot run without are required here; production.py
requires the rest, local.py keeps convenient defaults for a laptop.
"""
import os

from django.core.exceptions import ImproperlyConfigured

from .env import as_list, observatory, optional, release_name, require

# ---------------------------------------------------------------- identity

CRDS_OBSERVATORY = observatory(require("CRDS_OBSERVATORY"))
CRDS_KIND = optional("CRDS_KIND", "django")
CRDS_SERVER_URL = optional("CRDS_SERVER_URL", "http://127.0.0.1:8000").rstrip("/")
CRDS_SERVER_ROOT = optional("CRDS_SERVER_ROOT", os.getcwd())
# The release this code is (`inv upgrade`: <root>/releases/<name>/server is this directory's
# parent; its release.json names it); "" when it runs from a checkout. get_server_info says it.
CRDS_RELEASE = release_name(os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
# Seconds a process may reuse its get_server_info answer (see catalog/infocache.py).
CRDS_SERVER_INFO_TTL = int(optional("CRDS_SERVER_INFO_TTL", "10"))
# download_metadata precomputed by a restore or mirror from the staged database, read by the
# first get_server_info after the restart when the catalog's fingerprint matches (catalog/warm.py).
CRDS_SERVER_INFO_WARM = optional("CRDS_SERVER_INFO_WARM",
                                 os.path.join(CRDS_SERVER_ROOT, "run", "server_info.warm.json"))

# Serving through crdsops' swaps and maintenance (crds_server/serving.py); each unset = off.
CRDS_HOLD_FILE = optional("CRDS_HOLD_FILE", "")  # while it exists, requests wait (a swap is under way)
CRDS_HOLD_TIMEOUT = float(optional("CRDS_HOLD_TIMEOUT", "10"))  # ... at most this many seconds
CRDS_GENERATION_FILE = optional("CRDS_GENERATION_FILE", "")  # new content: a new catalog, drop caches
CRDS_MAINTENANCE_FILE = optional("CRDS_MAINTENANCE_FILE", "")  # while it exists, JSON-RPC answers 503

# The largest JSON-RPC request body the server reads, and the deepest nesting it accepts; beyond
# either the answer is a JSON-RPC error (catalog/views.py, catalog/jsonrpc.py), never an HTML page.
# 16 MiB: the largest requests the real crds client sends are get_file_info_map for every file it
# syncs (about 30 bytes a name: some 500,000 names, more than an observatory's whole catalog) and
# get_best_references_by_header_map (thousands of headers of a few KB); a body is held in memory
# by each of a server's threads, so no larger. Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB, an
# HTML 400) does not apply: the JSON-RPC view reads the body itself.
CRDS_JSONRPC_MAX_BYTES = 16 * 1024 * 1024
# A request is a few levels deep (params, a header map, a header); 100 is more than any needs.
CRDS_JSONRPC_MAX_DEPTH = 100

# ---------------------------------------------------------------- storage

CRDS_PATH = os.path.abspath(require("CRDS_PATH"))
CRDS_SERVER_FILES = os.path.abspath(require("CRDS_SERVER_FILES"))
CRDS_DBBACKUP_DIR = optional("CRDS_DBBACKUP_DIR", os.path.join(CRDS_SERVER_FILES, "dbbackup"))

# ---------------------------------------------------------------- database

CRDS_DB_ENGINE = require("CRDS_DB_ENGINE").lower()
CRDS_DB_NAME = require("CRDS_DB_NAME")

if CRDS_DB_ENGINE == "sqlite":
    _default_db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.abspath(CRDS_DB_NAME),
    }
elif CRDS_DB_ENGINE == "mysql":
    CRDS_DB_OPTION_FILE = require("CRDS_DB_OPTION_FILE")
    _default_db = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": CRDS_DB_NAME,
        # Host and port may also come from the option file; credentials only do.
        "HOST": optional("CRDS_DB_HOST", ""),
        "PORT": optional("CRDS_DB_PORT", ""),
        "OPTIONS": {"read_default_file": CRDS_DB_OPTION_FILE, "charset": "utf8mb4"},
        # Spelled out so `manage.py test` can never run against the live schema.
        "TEST": {"NAME": "test_" + CRDS_DB_NAME, "CHARSET": "utf8mb4"},
    }
else:
    raise ImproperlyConfigured(f"CRDS_DB_ENGINE={CRDS_DB_ENGINE!r} must be 'sqlite' or 'mysql'")

# A smoke test of a new release (`inv upgrade`) serves the live database read-only.
if optional("CRDS_DB_READ_ONLY", "") == "1":
    if CRDS_DB_ENGINE == "sqlite":
        _default_db["NAME"] = f"file:{_default_db['NAME']}?mode=ro"  # Django opens SQLite with uri=True
    else:
        _default_db["OPTIONS"]["init_command"] = "SET SESSION TRANSACTION READ ONLY"

DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------- django

ALLOWED_HOSTS = as_list(optional("CRDS_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]"))
STATIC_URL = "/static/"
STATIC_ROOT = optional("CRDS_STATIC_ROOT", os.path.join(CRDS_SERVER_ROOT, "static"))

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    # the sessions of the web pages' users; `inv nightly` clears the expired ones (clearsessions)
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "dbbackup",
    "crds_server.catalog",
]

MIDDLEWARE = [
    # first: a held request waits before anything else looks at it
    "crds_server.serving.ServingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "crds_server.urls"
WSGI_APPLICATION = "crds_server.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Catalog listings can be large; the JSON-RPC body limit stays Django's default.
TEST_RUNNER = "crds_server.test_runner.IsolatedCacheRunner"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"crds_server": {"handlers": ["console"], "level": "INFO"}},
}

# ---------------------------------------------------------------- backups

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": CRDS_DBBACKUP_DIR},
    },
}

# The stock mysqldump connector would put USER/PASSWORD on the command line; ours
# passes the option file instead.  SQLite keeps dbbackup's default connector.
DBBACKUP_CONNECTORS = (
    {"default": {"CONNECTOR": "crds_server.dbbackup_connectors.MysqlOptionFileConnector"}}
    if CRDS_DB_ENGINE == "mysql"
    else {}
)
DBBACKUP_FILENAME_TEMPLATE = "crds-{servername}-{databasename}-{datetime}.{extension}"
DBBACKUP_HOSTNAME = f"{CRDS_OBSERVATORY}.{CRDS_KIND}"
