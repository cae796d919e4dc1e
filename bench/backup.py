#!/usr/bin/env python3
"""What `inv backup` and `inv restore` cost against the plain MySQL tools, same run.

A throwaway MariaDB account and database (500,000 catalog rows) behind an hst dev server
(runserver on a free port, everything under a temporary directory). Alternating, REPEATS
times each:

  backup_vs_mysqldump_gzip    `inv backup` (dump, support dirs, listings, manifest, verify,
                              publish, retention) ÷ `mysqldump --single-transaction | gzip`
                              of the same database. Target <= 0.8.
  restore_vs_gunzip_mysql     `inv restore --yes` (verify, safety backup, staged load, stop,
                              swap, start, health check) ÷ `gunzip | mysql` of the plain dump
                              into the same database. Target <= 1.0 (get_server_info's
                              download_metadata is precomputed from the staged database,
                              so the restart's first request is cheap).

Sizes: BENCH_ROWS (default 500000), BENCH_REPEATS (default 5).

Needs MariaDB with a passwordless root at 127.0.0.1:3306 (to create the account), the
mysql/mysqldump clients and the stack in .venv. Exits 0 when it measured.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    CHECKOUT,
    INV,
    Account,
    figure,
    free_port,
    mariadb_missing,
    missing_prerequisite,
    note,
    root_sql,
    timed,
)

ROWS = int(os.environ.get("BENCH_ROWS", "500000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))

FILL = f"""
INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, sha1sum, state,
    blacklisted, rejected, delivery_date, description)
SELECT CONCAT('bench_', LPAD(seq, 7, '0'), IF(seq % 10 = 0, '.rmap', '_flt.fits')), 'hst',
       IF(seq % 10 = 0, 'mapping', 'reference'), ELT(1 + seq % 5, 'acs', 'wfc3', 'cos', 'stis', 'nicmos'),
       'biasfile', 1000 + seq * 37 % 99991, SHA1(seq), 'operational', seq % 97 = 0, 0,
       TIMESTAMPADD(SECOND, seq, '2020-01-01'), CONCAT('bench row ', seq)
FROM seq_1_to_{ROWS};
"""


def main() -> int:
    why = missing_prerequisite("mysql", "mysqldump", "gzip")
    if why:
        print(f"cannot measure: {why}", file=sys.stderr)
        return 1
    missing = mariadb_missing()
    if missing:
        print(f"cannot measure: {missing}", file=sys.stderr)
        return 1

    from support import deep_merge, make_configs

    from crdsops.db import mysql

    account = Account("bench")
    database = account.database
    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-backup-"))
    account.create()
    env = None
    try:
        option_file = mysql.write_option_file(where / "my.cnf", account.user, account.password)
        overrides = {
            "root": str(where / "{observatory}-{kind}"),
            "database": {"engine": "mysql", "name": database, "option_file": str(option_file),
                         "host": "127.0.0.1", "port": 3306},
            "web": {"server": "runserver", "port": free_port(), "processes": 1, "threads": 1,
                    "user": None, "group": None},
            "backups": {"private_dir": "{root}/backups", "shared_dir": str(where / "shared")},
        }
        configs = make_configs(where, {("hst", "dev"): deep_merge({}, overrides)})
        env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(where / "installed.json"))
        subprocess.run([str(INV), "install", "--obs", "hst", "--kind", "dev"], cwd=CHECKOUT, env=env,
                       check=True, capture_output=True)
        subprocess.run([str(INV), "manage", "--", "seed_demo"], cwd=CHECKOUT, env=env, check=True,
                       capture_output=True)
        start = time.perf_counter()
        root_sql(f"USE `{database}`;" + FILL)
        note(f"{ROWS} catalog rows loaded in {time.perf_counter() - start:.1f}s; {REPEATS} repetitions, alternating")
        subprocess.run([str(INV), "run"], cwd=CHECKOUT, env=env, check=True, capture_output=True)

        client = mysql.client_argv  # --defaults-extra-file first: no password on argv
        from crdsops.config.loader import load_config

        cfg = load_config("hst", "dev", configs)
        plain_dump = where / "plain.sql.gz"
        dump_cmd = (" ".join(map(str, client(cfg, "mysqldump", "--single-transaction", database)))
                    + f" | gzip > {plain_dump}")
        load_cmd = f"gunzip -c {plain_dump} | " + " ".join(map(str, client(cfg, "mysql", database)))
        shell = ["/bin/bash", "-o", "pipefail", "-c"]

        timed([str(INV), "backup"], env)  # warm-up: page cache, bytecode, first listing
        timed([*shell, dump_cmd], env)
        ours_b, plain_b, ours_r, plain_r = [], [], [], []
        for _ in range(REPEATS):
            plain_b.append(timed([*shell, dump_cmd], env))
            ours_b.append(timed([str(INV), "backup"], env))
        for _ in range(REPEATS):
            plain_r.append(timed([*shell, load_cmd], env))
            ours_r.append(timed([str(INV), "restore", "--yes"], env))
        mb, mr = statistics.median, statistics.median
        note(f"inv backup median {mb(ours_b):.2f}s, mysqldump --single-transaction | gzip median {mb(plain_b):.2f}s")
        note(f"inv restore median {mr(ours_r):.2f}s, gunzip | mysql median {mr(plain_r):.2f}s")
        figure("backup_vs_mysqldump_gzip", mb(ours_b) / mb(plain_b), "<= 0.8")
        figure("restore_vs_gunzip_mysql", mr(ours_r) / mr(plain_r), "<= 1.0")
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", None)
        print(f"cannot measure: {err}{(': ' + detail.decode()[-500:]) if isinstance(detail, bytes) else ''}",
              file=sys.stderr)
        return 1
    finally:
        _clean_up(env, where, account)


def _clean_up(env, where: Path, account: Account) -> None:
    """Stop the server, drop the throwaway databases and account (BENCH_KEEP=1 keeps them)."""
    if os.environ.get("BENCH_KEEP"):
        note(f"kept: CRDSOPS_CONFIGS={where / 'configs'} CRDSOPS_STATE={where / 'installed.json'}")
    else:
        if env is not None:
            subprocess.run([str(INV), "stop"], cwd=CHECKOUT, env=env, capture_output=True)
        account.drop()
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
