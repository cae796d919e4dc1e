"""Settings for running the test suite with nothing configured: SQLite in a temp dir.

Variables already set in the environment win, so the same suite also runs against
MySQL (Django then creates and drops test_<CRDS_DB_NAME>).
"""
import atexit
import os
import shutil
import tempfile

_scratch = tempfile.mkdtemp(prefix="crds_server_test_")
atexit.register(shutil.rmtree, _scratch, ignore_errors=True)

for _name, _value in {
    "CRDS_OBSERVATORY": "hst",
    "CRDS_KIND": "django",
    "CRDS_PATH": os.path.join(_scratch, "cache"),
    "CRDS_SERVER_FILES": os.path.join(_scratch, "server_files"),
    "CRDS_DB_ENGINE": "sqlite",
    "CRDS_DB_NAME": os.path.join(_scratch, "crds.sqlite3"),
    "CRDS_DBBACKUP_DIR": os.path.join(_scratch, "dbbackup"),
    "CRDS_STATIC_ROOT": os.path.join(_scratch, "static"),
}.items():
    os.environ.setdefault(_name, _value)

from .local import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The suite runs beside the live server (`inv runtests`), with its environment: it must neither
# wait on the live server's hold, nor answer 503 for its maintenance, nor follow its generations.
CRDS_HOLD_FILE = CRDS_GENERATION_FILE = CRDS_MAINTENANCE_FILE = ""
