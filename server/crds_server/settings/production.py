"""Settings for mod_wsgi kinds (dev, test, ops, I&T): DEBUG off, nothing defaulted."""
from .base import *
from .env import as_list, read_secret_key, require

DEBUG = False

# base.py defaults these for laptops; a VM must say them explicitly.
CRDS_KIND = require("CRDS_KIND")
CRDS_SERVER_URL = require("CRDS_SERVER_URL").rstrip("/")
CRDS_SERVER_ROOT = require("CRDS_SERVER_ROOT")
STATIC_ROOT = require("CRDS_STATIC_ROOT")
ALLOWED_HOSTS = as_list(require("CRDS_ALLOWED_HOSTS"))
CRDS_DBBACKUP_DIR = require("CRDS_DBBACKUP_DIR")
STORAGES["dbbackup"]["OPTIONS"]["location"] = CRDS_DBBACKUP_DIR
DBBACKUP_HOSTNAME = f"{CRDS_OBSERVATORY}.{CRDS_KIND}"

SECRET_KEY = read_secret_key(require("CRDS_SECRET_KEY_FILE"))

SESSION_COOKIE_SECURE = CRDS_SERVER_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Behind Apache/mod_wsgi each daemon thread keeps its MySQL connection between requests
# (a new login per request costs more than the queries of get_server_info); checked
# before reuse so a restarted MariaDB costs one failed ping, not a failed request.
if CRDS_DB_ENGINE == "mysql":
    DATABASES["default"]["CONN_MAX_AGE"] = 300
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
