#!/usr/bin/env python3
"""What `inv upgrade` costs against `inv rerun`, and what a client sees meanwhile, on hst dev
(Apache/mod_wsgi + MariaDB, as bench/rerun.py sets it up).

The server's upgrades come from a git repository made here (tests/releasekit.py: `base` and
`good` differ in one line of the server, with the same conda-lock.yml, so the stack is shared).
A first upgrade adopts the running code as the first release; then, alternating over REPEATS
rounds under a client load of 4 threads (tests/clientload.py: the real crds client's requests,
no retry):

  upgrade_seconds_vs_rerun   median seconds of `inv upgrade --to base|good --yes` (make the
                             release, preflight, migrate, smoke test with the real client, switch,
                             graceful reload, probe) ÷ median seconds of `inv rerun`. Target <= 3.
  upgrade_failed_requests    failed requests over every upgrade's load. Target <= 0.
  upgrade_longest_gap_s      median of the longest time without an answer (for the record)

Usage: bench/upgrade.py   (from the repository root; as root, the checkout must be readable by www-data)
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import INV, MYSQL_MISSING, Account, figure, note, web_option_file
from rerun import CannotMeasure, Server

REPEATS = 3


def timed_under_load(server: Server, *args: str):
    started = time.monotonic()
    report = server.under_load(args)
    return time.monotonic() - started, report


def main() -> int:
    if MYSQL_MISSING or not INV.exists():
        print(f"cannot measure: {MYSQL_MISSING or f'{INV} missing; run `make build`'}", file=sys.stderr)
        return 1
    from releasekit import make_repo  # tests/releasekit.py, on the path common.py sets

    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-upgrade-", dir="/tmp"))
    where.chmod(0o755)
    account, server = Account("up"), None
    try:
        account.create()
        option_file = web_option_file(where / "my.cnf", account)
        repo = make_repo(where)
        server = Server(where, "embedded", account, option_file, {"upgrade": {"repository": str(repo)}})
        server.set_up()
        server.inv("upgrade", "--to", "good", "--yes")  # adopts the running code: not measured
        upgrades, reruns = [], []
        for round_ in range(REPEATS):
            upgrades.append(timed_under_load(server, "upgrade", "--to", "base" if round_ % 2 == 0 else "good", "--yes"))
            reruns.append(timed_under_load(server, "rerun"))
            note(f"round {round_ + 1}: upgrade {upgrades[-1][0]:.1f} s, {upgrades[-1][1].describe()}; "
                 f"rerun {reruns[-1][0]:.1f} s")
        note(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        ratio = statistics.median(s for s, _ in upgrades) / statistics.median(s for s, _ in reruns)
        figure("upgrade_seconds_vs_rerun", ratio, "<= 3")
        figure("upgrade_failed_requests", sum(r.failed for _, r in upgrades), "<= 0", digits=0)
        figure("upgrade_longest_gap_s", statistics.median(r.longest_gap for _, r in upgrades), "for the record")
        return 0
    except CannotMeasure as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        account.drop()
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
