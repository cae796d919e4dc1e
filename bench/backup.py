#!/usr/bin/env python3
"""What `inv backup` and `inv restore` cost against the plain MySQL tools, same run.

A throwaway MariaDB account and database (500,000 catalog rows) behind an hst dev server
(runserver on a free port, everything under a temporary directory). Alternating, REPEATS
times each:

  backup_vs_mysqldump_gzip    `inv backup` (dump, support dirs, listings, manifest, verify,
                              publish, retention) ÷ `mysqldump --single-transaction | gzip`
                              of the same database. Target <= 0.6.
  restore_vs_gunzip_mysql     `inv restore --yes` from its start until the new state serves
                              (verify, staged load and warm-up, the held swap, health check:
                              the line "the new state serves, healthy") ÷ `gunzip | mysql` of
                              the plain dump into the same database. Target <= 0.8.
  (make-up)                   beside them, `mysqldump | zstd` (our dump step's own tools, the floor
                              of the backup) and `inv --help backup` (process start), same rounds.
  restore_total_vs_gunzip_mysql   the whole `inv restore --yes` (the above, then, while the new
                              state serves, the safety backup of the old state and the closing
                              cache check) ÷ the same; no target: printed so the make-up shows.

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

SERVING = "the new state serves, healthy"  # what `inv restore` says once the new state serves

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
        from crdsops.db.compression import compression

        floor_cmd = (" ".join(map(str, client(cfg, "mysqldump", "--single-transaction", "--quick", database)))
                     + " | " + " ".join(compression().compress) + f" > {where / 'floor.sql.zst'}")
        shell = ["/bin/bash", "-o", "pipefail", "-c"]
        _measure(env, [*shell, dump_cmd], [*shell, load_cmd], [*shell, floor_cmd])
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", None)
        print(f"cannot measure: {err}{(': ' + detail.decode()[-500:]) if isinstance(detail, bytes) else ''}",
              file=sys.stderr)
        return 1
    finally:
        _clean_up(env, where, account)


def _measure(env, dump: list[str], load: list[str], floor: list[str]) -> None:
    """Alternate ours and the plain tools, REPEATS times each; print the figures."""
    from crdsops.db.compression import compression

    timed([str(INV), "backup"], env)  # warm-up: page cache, bytecode, first listing
    timed(dump, env)
    ours_b, plain_b, ours_r, total_r, plain_r, floor_b, start_b = [], [], [], [], [], [], []
    for _ in range(REPEATS):
        plain_b.append(timed(dump, env))
        ours_b.append(timed([str(INV), "backup"], env))
        floor_b.append(timed(floor, env))
        start_b.append(timed([str(INV), "--help", "backup"], env))
    for _ in range(REPEATS):
        plain_r.append(timed(load, env))
        serving, total = timed_to_serving([str(INV), "restore", "--yes"], env)
        ours_r.append(serving)
        total_r.append(total)
    m = statistics.median
    note(f"inv backup median {m(ours_b):.2f}s, mysqldump --single-transaction | gzip median {m(plain_b):.2f}s")
    note(f"make-up of inv backup: its dump step's own tools (mysqldump | {' '.join(compression().compress)}) "
         f"{m(floor_b):.2f}s = {m(floor_b) / m(plain_b):.2f} of the plain pipeline; process start and imports "
         f"(`inv --help backup`) {m(start_b):.2f}s; the rest (the listings, archives and counts beside the dump, "
         f"then seal, verify, publish, retention) {m(ours_b) - m(floor_b) - m(start_b):.2f}s")
    note(f"inv restore median {m(ours_r):.2f}s until the new state serves, {m(total_r):.2f}s in all "
         f"(then the safety backup of the old state and the closing check); gunzip | mysql median "
         f"{m(plain_r):.2f}s")
    figure("backup_vs_mysqldump_gzip", m(ours_b) / m(plain_b), "<= 0.6")
    figure("restore_vs_gunzip_mysql", m(ours_r) / m(plain_r), "<= 0.8")
    print(f"restore_total_vs_gunzip_mysql = {m(total_r) / m(plain_r):.2f} (no target: the whole command, "
          "the safety backup after the swap included)", flush=True)


def timed_to_serving(argv, env) -> tuple[float, float]:
    """(seconds until the restore says the new state serves, seconds of the whole command)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    serving, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if serving is None and SERVING in line:
            serving = time.perf_counter() - start
    code = proc.wait()
    total = time.perf_counter() - start
    if code != 0 or serving is None:
        raise RuntimeError(f"{' '.join(argv)} exited {code} (said {SERVING!r}: {serving is not None}):\n"
                           + "".join(lines)[-2000:])
    return serving, total


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
