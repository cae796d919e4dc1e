#!/usr/bin/env python3
"""What a client sees while `inv rerun` takes new code and configuration up on hst dev (Apache/mod_wsgi + MariaDB).

A client load of 4 threads (tests/clientload.py: the real crds client's JSON-RPC calls and
sha1-checked downloads through Apache, no retry) runs
across each rerun and counts refused, reset, 5xx and timed-out requests, and the longest
time in which no request was answered. Alternating over REPEATS rounds:

  rerun_failed_requests        failed requests over all rounds of `inv rerun` (embedded mode,
                               the default) -- graceful reload
  rerun_longest_gap_s          median over the rounds of the longest time without an answer
  restart_failed_requests      the same for the plain way (`inv stop`, `inv install`, `inv run`),
  restart_longest_gap_s        for comparison (not a target)
  daemon_rerun_failed_requests `inv rerun` on a second server in mod_wsgi daemon mode: what the
  daemon_rerun_longest_gap_s   embedded/daemon choice in crdsops.runtime.backends.modwsgi rests on

Each server is installed with `inv install` into a temporary directory with private configs, on
a throwaway MariaDB account (root with an empty password at 127.0.0.1:3306 must be able to create
it). Only loopback traffic. Everything it creates is removed at the end.

Usage: bench/rerun.py   (from the repository root; as root, the checkout must be readable by www-data)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import CHECKOUT, INV, MYSQL_MISSING, STACK_BIN, Account, figure, free_port, note, web_option_file

REPEATS = 3
THREADS = 4


class CannotMeasure(Exception):
    pass


class Server:
    """hst dev in ``where``/<mode>, on its own port and database."""

    def __init__(self, where: Path, mode: str, account: Account, option_file: Path, more: dict | None = None):
        self.mode, self.port = mode, free_port()
        home = where / mode
        configs = home / "configs"
        shutil.copytree(CHECKOUT / "configs", configs)
        extra = {"root": str(home / "hst-dev"), "web": {"port": self.port, "wsgi_mode": mode, "processes": 2,
                                                        "threads": 4},
                 "database": {"name": f"{account.database}_{mode}", "option_file": str(option_file)},
                 "backups": {"private_dir": "{root}/backups", "shared_dir": str(home / "shared")}, **(more or {})}
        merge = ("import sys, yaml, json\npath, extra = sys.argv[1], json.loads(sys.argv[2])\n"
                 "data = yaml.safe_load(open(path)) or {}\n"
                 "def merge(a, b):\n    for k, v in b.items():\n"
                 "        a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, dict) else v\n    return a\n"
                 "open(path, 'w').write(yaml.safe_dump(merge(data, extra)))\n")
        subprocess.run([str(STACK_BIN / "python"), "-c", merge, str(configs / "hst" / "dev.yaml"), json.dumps(extra)],
                       check=True)
        self.env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(home / "installed.json"))
        self.running = False

    def inv(self, *args: str) -> str:
        result = subprocess.run([str(INV), *args], cwd=CHECKOUT, env=self.env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=900)
        if result.returncode != 0:
            raise CannotMeasure(f"{self.mode}: inv {' '.join(args)} failed: "
                                f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        return result.stdout

    def set_up(self) -> None:
        self.inv("install", "--obs", "hst", "--kind", "dev")
        self.inv("manage", "--", "seed_demo")
        self.inv("run")
        self.running = True

    def under_load(self, *steps: tuple[str, ...]):
        from clientload import ClientLoad  # tests/clientload.py, on the path common.py sets

        with ClientLoad(f"http://127.0.0.1:{self.port}", "hst", threads=THREADS) as load:
            for step in steps:
                self.inv(*step)
        return load.report

    def stop(self) -> None:
        if self.running:
            subprocess.run([str(INV), "stop"], cwd=CHECKOUT, env=self.env, capture_output=True, timeout=120)


def main() -> int:
    if MYSQL_MISSING or not INV.exists():
        print(f"cannot measure: {MYSQL_MISSING or f'{INV} missing; run `make build`'}", file=sys.stderr)
        return 1
    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-rerun-", dir="/tmp"))
    where.chmod(0o755)
    account, servers = Account("rr"), []
    try:
        account.create()
        option_file = web_option_file(where / "my.cnf", account)
        embedded, daemon = Server(where, "embedded", account, option_file), Server(where, "daemon", account, option_file)
        servers = [embedded, daemon]
        for server in servers:
            server.set_up()
        runs = {"rerun": [], "restart": [], "daemon": []}
        for round_ in range(REPEATS):
            runs["rerun"].append(embedded.under_load(("rerun",)))
            runs["restart"].append(embedded.under_load(("stop",), ("install",), ("run",)))
            runs["daemon"].append(daemon.under_load(("rerun",)))
            note(f"round {round_ + 1}: " + "; ".join(f"{k} {v[-1].describe()}" for k, v in runs.items()))
        note(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        failed = {k: sum(load.failed for load in v) for k, v in runs.items()}
        gap = {k: statistics.median(load.longest_gap for load in v) for k, v in runs.items()}
        figure("rerun_failed_requests", failed["rerun"], "== 0", digits=0)
        figure("rerun_longest_gap_s", gap["rerun"], "<= 2")
        figure("restart_failed_requests", failed["restart"], "none, for comparison", digits=0)
        figure("restart_longest_gap_s", gap["restart"], "none, for comparison")
        figure("daemon_rerun_failed_requests", failed["daemon"], "none, for the mode chosen", digits=0)
        figure("daemon_rerun_longest_gap_s", gap["daemon"], "none, for the mode chosen")
        return 0
    except CannotMeasure as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        account.drop()
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
