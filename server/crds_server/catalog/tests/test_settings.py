"""Settings are read from the environment only, and fail naming the missing variable."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

from django.test import SimpleTestCase

SERVER_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))



def _has_mysqldb() -> bool:
    """Whether this stack can load Django's MySQL backend (mysqlclient's MySQLdb, the vm category)."""
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return False
    return True


NO_MYSQLDB = ("MySQLdb (mysqlclient) is not in this stack: it comes with the VM kinds' category, which "
              "the default `make run` stack leaves out (add it with `inv build --vm`)")

PRINT_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({"debug": settings.DEBUG, "db": settings.DATABASES["default"],
                  "connectors": settings.DBBACKUP_CONNECTORS, "backup_dir":
                  settings.STORAGES["dbbackup"]["OPTIONS"]["location"], "hosts": settings.ALLOWED_HOSTS}))
"""


class SettingsFromEnvironmentTests(SimpleTestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        key = os.path.join(self.tmp.name, "secret_key")
        with open(key, "w") as handle:
            handle.write("k" * 50)
        self.full = {
            "CRDS_OBSERVATORY": "jwst", "CRDS_KIND": "dev", "CRDS_SERVER_URL": "https://jwst-crds-dev.example",
            "CRDS_SERVER_ROOT": self.tmp.name, "CRDS_PATH": self.tmp.name + "/cache",
            "CRDS_SERVER_FILES": self.tmp.name + "/sf", "CRDS_DB_ENGINE": "sqlite",
            "CRDS_DB_NAME": self.tmp.name + "/db.sqlite3", "CRDS_STATIC_ROOT": self.tmp.name + "/static",
            "CRDS_SECRET_KEY_FILE": key, "CRDS_ALLOWED_HOSTS": "a.example, b.example",
            "CRDS_DBBACKUP_DIR": self.tmp.name + "/dbb",
        }

    def load(self, module, env):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRDS_", "DJANGO_"))}
        clean.update(env, DJANGO_SETTINGS_MODULE=f"crds_server.settings.{module}", PYTHONPATH=SERVER_DIR)
        return subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + PRINT_SETTINGS],
                              env=clean, capture_output=True, text=True, cwd=self.tmp.name)

    def test_production_with_everything(self):
        result = self.load("production", self.full)
        self.assertEqual(result.returncode, 0, result.stderr)
        loaded = json.loads(result.stdout)
        self.assertFalse(loaded["debug"])
        self.assertEqual(loaded["hosts"], ["a.example", "b.example"])
        self.assertEqual(loaded["backup_dir"], self.tmp.name + "/dbb")
        self.assertEqual(loaded["connectors"], {})

    def test_production_names_each_missing_variable(self):
        for name in ("CRDS_OBSERVATORY", "CRDS_PATH", "CRDS_DB_ENGINE", "CRDS_SECRET_KEY_FILE",
                     "CRDS_ALLOWED_HOSTS", "CRDS_SERVER_URL", "CRDS_DBBACKUP_DIR"):
            env = dict(self.full)
            del env[name]
            result = self.load("production", env)
            self.assertNotEqual(result.returncode, 0, name)
            self.assertIn("ImproperlyConfigured", result.stderr)
            self.assertIn(name, result.stderr)

    def test_production_refuses_missing_secret_key_file(self):
        result = self.load("production", dict(self.full, CRDS_SECRET_KEY_FILE=self.tmp.name + "/absent"))
        self.assertIn("CRDS_SECRET_KEY_FILE", result.stderr)
        self.assertNotEqual(result.returncode, 0)

    def test_local_needs_only_the_core(self):
        core = {k: self.full[k] for k in ("CRDS_OBSERVATORY", "CRDS_PATH", "CRDS_SERVER_FILES",
                                          "CRDS_DB_ENGINE", "CRDS_DB_NAME")}
        result = self.load("local", core)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(json.loads(result.stdout)["debug"])

    @unittest.skipUnless(_has_mysqldb(), NO_MYSQLDB)
    def test_mysql_reads_the_option_file_and_isolates_the_test_db(self):
        env = dict(self.full, CRDS_DB_ENGINE="mysql", CRDS_DB_NAME="crds_jwst_dev",
                   CRDS_DB_OPTION_FILE="/etc/crds/my.cnf", CRDS_DB_HOST="db.example", CRDS_DB_PORT="3307")
        result = self.load("production", env)
        self.assertEqual(result.returncode, 0, result.stderr)
        loaded = json.loads(result.stdout)
        db = loaded["db"]
        self.assertEqual(db["OPTIONS"], {"read_default_file": "/etc/crds/my.cnf", "charset": "utf8mb4"})
        self.assertEqual(db["TEST"]["NAME"], "test_crds_jwst_dev")
        self.assertEqual((db["HOST"], db["PORT"], db.get("PASSWORD", "")), ("db.example", "3307", ""))
        self.assertIn("MysqlOptionFileConnector", loaded["connectors"]["default"]["CONNECTOR"])
        del env["CRDS_DB_OPTION_FILE"]
        self.assertIn("CRDS_DB_OPTION_FILE", self.load("production", env).stderr)

    def test_bad_engine(self):
        result = self.load("local", dict(self.full, CRDS_DB_ENGINE="oracle"))
        self.assertIn("CRDS_DB_ENGINE", result.stderr)
