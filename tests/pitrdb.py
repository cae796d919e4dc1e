"""A private MariaDB server with a binary log, for point-in-time restore tests and benchmarks.

The machine's MariaDB (127.0.0.1:3306) may run without ``log_bin``; this one is made with
``mariadb-install-db`` in a temporary datadir and started as ``mariadbd --log-bin
--binlog-format=ROW`` on a free loopback port. Its account has what crdsops asks a DBA for:
ALL on ``<database>%`` (the live schema and its staging twins), REPLICATION SLAVE and BINLOG
MONITOR (the archive), BINLOG REPLAY (the replay of a restore).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

TOOLS = ("mariadb-install-db", "mariadbd", "mariadb-binlog", "mysql", "mysqldump")


def missing() -> str | None:
    absent = [t for t in TOOLS if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    return f"MariaDB server tools needed: {', '.join(absent)} (apt-get install mariadb-server)" if absent else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateMariadb:
    def __init__(self, where: Path):
        self.where = Path(where)
        self.datadir = self.where / "data"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.user = "crdsops_pitr"
        self.password = secrets.token_urlsafe(12)
        self.database = "crds_pitr"

    def start(self) -> PrivateMariadb:
        self.where.mkdir(parents=True, exist_ok=True)
        if not self.datadir.exists():
            subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           check=True, capture_output=True, timeout=300)
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.log = open(self.where / "mariadbd.log", "ab")
        self.process = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={self.datadir}", "--user=root", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.where / 'sock'}", f"--log-bin={self.datadir / 'binlog'}",
             "--binlog-format=ROW", "--server-id=1", "--skip-name-resolve", f"--pid-file={self.where / 'pid'}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while self.root_sql("SELECT 1;", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private mariadbd did not start; see {self.where / 'mariadbd.log'}")
            time.sleep(0.2)
        return self

    def root_sql(self, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["mysql", "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{self.port}", "--batch",
                               "--skip-column-names"], input=sql, capture_output=True, text=True, timeout=60,
                              check=check)

    def create_account(self) -> None:
        pattern = self.database.replace("_", "\\_") + "%"
        self.root_sql(f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}';"
                      f"GRANT ALL ON `{pattern}`.* TO '{self.user}'@'127.0.0.1';"
                      f"GRANT REPLICATION SLAVE, BINLOG MONITOR, BINLOG REPLAY ON *.* TO '{self.user}'@'127.0.0.1';")

    def sql(self, sql: str) -> str:
        return self.root_sql(f"USE `{self.database}`;\n{sql}").stdout

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()
