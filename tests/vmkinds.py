"""Helpers for the VM kinds for real (tests/vm; fixtures in its conftest.py): MariaDB at 127.0.0.1:3306 and Apache/mod_wsgi.

Each module gets a throwaway MariaDB account (random password, in a 0600 option file) with
rights on ``crds_vm_<tag>`` and ``test_crds_vm_<tag>`` only, and a server root in a
directory the web user (www-data) can enter. Databases, the account and every Apache
process are removed afterwards, whatever happened.

Apache serves the server code and the stack as the web user. When it cannot read this
checkout (a clone in root's home: /root is 0700), the tests serve a readable copy instead
(``web_checkout``): the checkout's files under a world-readable /tmp directory with a stack of
its own built from the same lock (main + vm, from the shared file cache), and run that copy's
`inv`, as an operator would on a VM. `inv install` itself still refuses an unreadable checkout.

Skipped (with the reason) when there is no MariaDB with a passwordless root at
127.0.0.1:3306 or no Apache: `make test` (bin/bootstrap --test) sets both up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mariadb import root_sql
from support import CHECKOUT, Ops, copy_checkout, free_port

WEB_USER = "www-data"


def _why_not() -> str | None:
    if not shutil.which("mysql"):
        return "no mysql client (apt-get install mariadb-client)"
    try:
        root_sql("SELECT 1;")
    except (subprocess.SubprocessError, OSError):
        return "MariaDB with a passwordless root at 127.0.0.1:3306 needed"
    if not Path("/usr/sbin/apache2").exists():
        return "Apache needed (apt-get install apache2 apache2-dev)"
    if not (CHECKOUT / ".venv" / "bin" / "mod_wsgi-express").exists():
        return "mod_wsgi-express missing from the stack (.venv); run bin/bootstrap --test (it adds the vm category)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(WEB_USER)
        except KeyError:
            return f"no {WEB_USER} user"
    return None


def _blocked_for_web_user(paths: list[Path]) -> str | None:
    for path in paths:
        for part in [*reversed(path.parents), path]:
            ok = subprocess.run(["/bin/sh", "-c", 'test -x "$1" || test -r "$1"', "sh", str(part)],
                                user=WEB_USER, group=WEB_USER, extra_groups=[]).returncode == 0
            if not ok:
                return str(part)
    return None


@dataclasses.dataclass(frozen=True)
class WebCheckout:
    """The checkout (and its stack) that Apache's user serves in these tests."""

    root: Path
    stack: Path
    copied: bool


_web: WebCheckout | None = None


def web_checkout() -> WebCheckout:
    """This checkout when the web user can read it (or we are not root), else a readable copy."""
    global _web
    if _web is None:
        # CRDSOPS_TEST_WEB_COPY=1: serve the copy even where this checkout is readable (tests the copy)
        blocked = os.geteuid() == 0 and (os.environ.get("CRDSOPS_TEST_WEB_COPY") == "1" or _blocked_for_web_user(
            [CHECKOUT / "server" / "manage.py", CHECKOUT / ".venv" / "bin" / "python"]))
        _web = _readable_copy() if blocked else WebCheckout(CHECKOUT, CHECKOUT / ".venv", False)
    return _web


def _readable_copy() -> WebCheckout:
    """The checkout's files under a world-readable directory, with a stack of its own (main + vm)."""
    root = web_dir("crdsops-vm-checkout-")
    try:
        copy_checkout(root)
        env = {k: v for k, v in os.environ.items()
               if k not in ("CRDSOPS_STACK_DEV", "CRDSOPS_STACK_VM", "PYTHONPATH", "VIRTUAL_ENV")}
        python = os.environ.get("CRDSOPS_STACK_PYTHON") or "/usr/bin/python3"
        built = subprocess.run([python, "-m", "crdsops.stack", "build", "--prefix", str(root / ".venv"), "--vm"],
                               cwd=root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               timeout=1200)
        if built.returncode != 0:
            raise RuntimeError(f"cannot build the stack of the web user's copy {root}: {built.stderr.strip()}")
        for dirpath, dirs, files in os.walk(root):  # whatever the umask: others may read and enter
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                mode = os.lstat(path).st_mode
                if not (mode & 0o170000 == 0o120000):  # not a symlink
                    want = mode | 0o004 | (0o001 if mode & 0o111 or name in dirs else 0)
                    if want != mode:
                        os.chmod(path, want & 0o7777)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return WebCheckout(root, root / ".venv", True)


def vm_ops(where: Path, configs: Path) -> Ops:
    """An operator who runs the `inv` of the checkout the web user serves."""
    return Ops(where, configs, checkout=web_checkout().root)


SKIP_REASON = _why_not()
requires_vm_services = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


class Account:
    """A MariaDB account with rights on one database (and its test_ twin) only."""

    def __init__(self, tag: str):
        self.tag = tag
        self.user = f"crdsops_vm_{tag}"
        self.database = f"crds_vm_{tag}"
        self.password = secrets.token_urlsafe(18)

    def create(self) -> None:
        root_sql("".join(
            f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY '{self.password}';"
            f"GRANT ALL ON `{self.database}`.* TO '{self.user}'@'{host}';"
            f"GRANT ALL ON `test_{self.database}`.* TO '{self.user}'@'{host}';"
            for host in ("localhost", "127.0.0.1")
        ))

    def drop(self) -> None:
        root_sql(f"DROP DATABASE IF EXISTS `{self.database}`; DROP DATABASE IF EXISTS `test_{self.database}`;"
                 + "".join(f"DROP USER IF EXISTS '{self.user}'@'{h}';" for h in ("localhost", "127.0.0.1")))

    def write_option_file(self, path: Path, password: str | None = None, mode: int = 0o600) -> Path:
        from crdsops.db import mysql

        mysql.write_option_file(path, self.user, self.password if password is None else password)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(WEB_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def database_exists(self, name: str | None = None) -> bool:
        name = name or self.database
        return root_sql(f"SHOW DATABASES LIKE '{name}';").strip() == name

    def rows(self, table: str) -> int:
        return int(root_sql(f"SELECT COUNT(*) FROM `{self.database}`.`{table}`;").strip())

    def grant_staging(self) -> None:
        """Rights on the staging twins a restore or a mirror makes (``<database>_crdsops_new``/``_old``)."""
        pattern = f"{self.database}_crdsops_".replace("_", "\\_") + "%"
        root_sql("".join(f"GRANT ALL ON `{pattern}`.* TO '{self.user}'@'{h}';" for h in ("localhost", "127.0.0.1")))

    def drop_staging(self) -> None:
        root_sql("".join(f"DROP DATABASE IF EXISTS `{self.database}_crdsops_{twin}`;" for twin in ("new", "old")))


def web_dir(prefix: str) -> Path:
    """A temporary directory the web user can enter (pytest's own are 0700 under root)."""
    where = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    where.chmod(0o755)
    return where


def vm_overrides(where: Path, account: Account, option_file: Path, **web) -> dict:
    return {
        "root": str(where / "{observatory}-{kind}"),
        "database": {"name": account.database, "host": "127.0.0.1", "port": 3306, "option_file": str(option_file)},
        "web": {"port": free_port(), "processes": 2, "threads": 4, "start_timeout": 30, "stop_timeout": 15, **web},
        "backups": {"private_dir": "{root}/backups", "shared_dir": str(where / "shared-backups")},
        "stack": {"prefix": str(web_checkout().stack)},
    }


def apache_processes(root: Path) -> list[str]:
    """Command lines of every process that runs an Apache/mod_wsgi under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline and ("httpd.conf" in cmdline or "wsgi:" in cmdline):
            found.append(f"{entry.name}: {cmdline}")
    return found


class CmdlineSampler:
    """Read every process's command line, over and over, in a thread; remember what it saw."""

    def __init__(self, secret: str):
        self.secret = secret
        self.leaks: list[str] = []
        self.mysql_commands: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        me = str(os.getpid())
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or entry.name == me:
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                        cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if self.secret in cmdline:
                    self.leaks.append(cmdline)
                words = cmdline.split()
                if words and os.path.basename(words[0]) in ("mysql", "mysqldump", "mariadb", "mariadb-dump"):
                    self.mysql_commands.add(cmdline.strip())
            self.samples += 1
            time.sleep(0.001)


@contextlib.contextmanager
def running_dev(vm):
    """hst dev installed, seeded with the demo catalog and running (its config); stopped afterwards,
    with no Apache or mod_wsgi process of it left."""
    vm.inv("install", "--obs", "hst", "--kind", "dev")
    vm.inv("manage", "--", "seed_demo")
    vm.inv("run")
    cfg = vm.config("hst", "dev")
    try:
        yield cfg
    finally:
        vm.inv("stop", check=False)
        assert not apache_processes(cfg.root)
