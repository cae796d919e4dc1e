"""The server's own Django suite on the stack `make run` builds, which has no MySQLdb.

The default stack leaves out the VM kinds' category (mysqlclient, mod_wsgi). A throwaway
venv sees this stack's packages through a .pth file, with a meta-path finder in front that
makes ``MySQLdb`` unimportable, as it is there. The test that needs MySQLdb must be skipped
with its reason, not fail.
"""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from support import CHECKOUT

HIDE_MYSQLDB = '''
import sys


class HideMySQLdb:
    """What the default stack is like: no MySQLdb to import."""

    def find_spec(self, name, path=None, target=None):
        if name == "MySQLdb" or name.startswith("MySQLdb."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideMySQLdb())
'''

MYSQL_TEST = ("crds_server.catalog.tests.test_settings.SettingsFromEnvironmentTests."
              "test_mysql_reads_the_option_file_and_isolates_the_test_db")


def venv_without_mysqldb(where: Path) -> Path:
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "hide_mysqldb.py").write_text(HIDE_MYSQLDB)
    (site / "_hide_mysqldb.pth").write_text("import hide_mysqldb\n")
    (site / "zz_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_settings_tests_skip_the_mysql_one_where_mysqldb_is_absent(tmp_path):
    python = venv_without_mysqldb(tmp_path / "venv")
    hidden = subprocess.run([str(python), "-c", "import django, crds, MySQLdb"], capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'MySQLdb'" in hidden.stderr, hidden.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRDS_", "DJANGO_", "PYTHON"))}
    result = subprocess.run(
        [str(python), "manage.py", "test", "crds_server.catalog.tests.test_settings", "--noinput", "-v", "2",
         "--settings=crds_server.settings.test"],
        cwd=CHECKOUT / "server", env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = [line for line in result.stderr.splitlines() if line.startswith("test_mysql_reads_the_option_file")]
    assert len(skipped) == 1 and f"({MYSQL_TEST}) ... skipped" in skipped[0], result.stderr[-3000:]
    assert "MySQLdb (mysqlclient) is not in this stack" in skipped[0]
    assert "OK (skipped=1)" in result.stderr
