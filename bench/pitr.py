#!/usr/bin/env python3
"""Point-in-time restore against a plain restore, and what a crash loses, on hst dev (runserver)
over a private MariaDB with a binary log (tests/pitrdb.py).

After a backup, a writer inserts rows into the server's catalog table for WRITE_SECONDS
(default 60; BENCH_PITR_SECONDS=600 for the issue's ten minutes) at about RATE rows/s, with
`inv binlog-archive` streaming. Then:

  binlog_archive_lag_s      the longest time, over SAMPLES moments during the writes, from a
                            row's commit until the archive holds the server's position as of
                            that commit. Target <= 5.
  pitr_rows_lost            the database killed (SIGKILL) at a random moment of the writes,
                            restarted, `inv restore --to-time` that moment: rows committed more
                            than the measured archive lag (plus the second binlog times round to)
                            before the kill that are missing. Target <= 0.
  pitr_restore_vs_restore   seconds of `inv restore --to-time latest` (the backup and every write
                            replayed) ÷ seconds of `inv restore --from` the same backup. Target <= 1.5.

Usage: bench/pitr.py (from the repository root, after `make build`; needs mariadb-server's tools).
"""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import CHECKOUT, INV, figure, note

WRITE_SECONDS = float(os.environ.get("BENCH_PITR_SECONDS", "60"))
RATE = 100
SAMPLES = 10
KILL_WINDOW = 20.0  # seconds of writes in which the database is killed


def main() -> int:
    from pitrdb import PrivateMariadb, missing  # tests/pitrdb.py, on the path common.py sets

    if missing():
        print(f"cannot measure: {missing()}", file=sys.stderr)
        return 1
    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-pitr-", dir="/tmp"))
    db = PrivateMariadb(where / "mariadb").start()
    env = None
    try:
        db.create_account()
        env = _server(where, db)
        inv = lambda *a, **k: _inv(env, *a, **k)  # noqa: E731
        inv("binlog-archive")
        inv("backup")
        writer = Writer(db)
        writer.start()
        lags = _lag_samples(db, env, WRITE_SECONDS)
        writer.stop()
        written = len(writer.committed)
        pitr_s, plain_s = _restore_times(inv)  # the backup, then every write replayed; the backup alone
        inv("backup")  # a replay may not cross the restores just made
        writer = Writer(db)
        writer.start()
        time.sleep(KILL_WINDOW)
        kill_at = writer.started + random.uniform(0.3, 0.9) * (time.time() - writer.started)
        time.sleep(max(0.0, kill_at - time.time()))
        db.process.send_signal(signal.SIGKILL)
        db.process.wait()
        writer.stop()
        lost = _restore_to_kill(db, inv, writer, kill_at, max(lags))
        note(f"{written} rows written in {WRITE_SECONDS:.0f} s; restore --to-time latest {pitr_s:.1f} s, "
             f"plain {plain_s:.1f} s; then killed at +{kill_at - writer.started:.1f} s of {KILL_WINDOW:.0f} s of writes, "
             f"{len(writer.committed)} committed")
        figure("binlog_archive_lag_s", max(lags), "<= 5")
        figure("pitr_rows_lost", lost, "<= 0", digits=0)
        figure("pitr_restore_vs_restore", pitr_s / plain_s, "<= 1.5")
        return 0
    finally:
        if env is not None:
            subprocess.run([str(INV), "binlog-archive", "--stop"], cwd=CHECKOUT, env=env, capture_output=True)
            subprocess.run([str(INV), "stop"], cwd=CHECKOUT, env=env, capture_output=True)
        db.stop()
        shutil.rmtree(where, ignore_errors=True)


def _server(where: Path, db) -> dict:
    """hst dev (runserver) on ``db``, installed, seeded and running; the environment its `inv` runs in."""
    sys.path.insert(0, str(CHECKOUT / "tests"))
    from support import deep_merge, local_overrides, make_configs

    from crdsops.db import mysql

    option_file = mysql.write_option_file(where / "my.cnf", db.user, db.password)
    configs = make_configs(where, {("hst", "dev"): deep_merge(local_overrides(where), {
        "database": {"engine": "mysql", "name": db.database, "option_file": str(option_file), "host": "127.0.0.1",
                     "port": db.port},
        "web": {"server": "runserver", "processes": 1, "threads": 1, "user": None, "group": None}})})
    env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(where / "installed.json"))
    for args in (("install", "--obs", "hst", "--kind", "dev"), ("manage", "--", "seed_demo"), ("run",)):
        _inv(env, *args)
    return env


def _inv(env: dict, *args: str, timeout: float = 1800) -> str:
    result = subprocess.run([str(INV), *args], cwd=CHECKOUT, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"cannot measure: inv {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


class Writer:
    """Inserts numbered rows, one transaction each, through one mysql client; keeps each commit's time."""

    SQL = ("INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, sha1sum, state, "
           "blacklisted, rejected, delivery_date, description) VALUES ('bench-{n}', 'hst', 'reference', 'acs', "
           "'darkfile', 1, '{z}', 'delivered', 0, 0, NOW(), 'pitr bench'); SELECT {n};\n")

    def __init__(self, db):
        self.db, self.committed, self._stop = db, [], threading.Event()
        self.started = 0.0

    def start(self) -> None:
        self.client = subprocess.Popen(["mysql", "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{self.db.port}",
                                        "--batch", "--skip-column-names", "--unbuffered", self.db.database],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True, bufsize=1)
        self.started = time.time()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                self.client.stdin.write(self.SQL.format(n=n, z="0" * 40))
                self.client.stdin.flush()
                if self.client.stdout.readline().strip() != str(n):  # autocommit: acknowledged = committed
                    return
                self.committed.append((n, time.time()))
                n += 1
                time.sleep(1 / RATE)
        except (BrokenPipeError, OSError):
            return

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.client.kill()


def _lag_samples(db, env: dict, seconds: float) -> list[float]:
    """Seconds from a moment's master position until the archive holds it, at SAMPLES moments."""
    from crdsops.config.loader import load_config
    from crdsops.data import binlogs

    cfg = load_config("hst", "dev", Path(env["CRDSOPS_CONFIGS"]))
    lags, end = [], time.time() + seconds
    while time.time() < end and len(lags) < SAMPLES:
        status = db.root_sql("SHOW MASTER STATUS;").stdout.split("\t")
        target, started = (status[0], int(status[1])), time.time()
        while True:
            files = binlogs.archived(cfg)
            newest = files[-1] if files else None
            if newest and (newest.name > target[0] or (newest.name == target[0] and newest.stat().st_size >= target[1])):
                break
            time.sleep(0.01)
        lags.append(time.time() - started)
        time.sleep(max(0.0, seconds / SAMPLES - lags[-1]))
    time.sleep(max(0.0, end - time.time()))
    return lags


def _restore_to_kill(db, inv, writer: Writer, kill_at: float, lag: float) -> int:
    db.start()
    inv("binlog-archive")
    when = datetime.datetime.fromtimestamp(kill_at, datetime.UTC)
    inv("restore", "--to-time", when.strftime("%Y-%m-%d %H:%M:%S"), "--yes")
    present = set(db.sql("SELECT name FROM catalog_catalogfile WHERE description = 'pitr bench';").split())
    due = [n for n, at in writer.committed if at < kill_at - lag - 1.0]
    return sum(1 for n in due if f"bench-{n}" not in present)


def _restore_times(inv) -> tuple[float, float]:
    """(seconds of `inv restore --to-time latest`, of `inv restore --from` the same backup). Once each:
    after either, a replay from that backup would cross a restore, which is refused."""
    backup = next(b["name"] for b in json.loads(inv("backups", "--json"))["backups"]
                  if b["where"] == "private" and b["purpose"] == "backup")
    started = time.monotonic()
    inv("restore", "--to-time", "latest", "--yes")
    pitr = time.monotonic() - started
    started = time.monotonic()
    inv("restore", "--from", backup, "--yes")
    return pitr, time.monotonic() - started


if __name__ == "__main__":
    sys.exit(main())
