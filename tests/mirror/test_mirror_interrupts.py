"""SIGINT and SIGTERM at every failpoint and at random moments of `inv mirror`, SQLite and MariaDB.

After each: the destination answers with its old state or the source's (never a mix of the
two), no staging or temporary file is left, its lock is free, and the next mirror succeeds;
throughout, a client load of the destination saw no failed request (``kept_answering``).
The state is the catalog and the support directories: the cache's references are synced
while the destination serves (new files only; nothing is deleted until the new state is live).
"""

from __future__ import annotations

import random

from interrupting import assert_mostly_interrupted, at_failpoint, at_moment, kept_answering, leftovers
from vms import sha256_tree

from crdsops.runtime import health

POINTS = ["mirror.staging", "restore.staging_ended", "restore.staged", "restore.swapped", "restore.health",
          "mirror.deleting", "backup.started", "backup.dumped", "backup.renamed"]
RANDOM_RUNS = 8  # few: each costs a run and a recovery; the failpoints above cover every named step
# Within a run, timed from the moment the lock appears: on a 2-core machine a mirror holds it
# 2.2-2.5 s (SQLite) or 2.7-3.4 s (MariaDB), longer under load; most runs must be cut short.
DELAYS = (0, 2.0)


def _state(pair):
    from test_mirror import _rows

    dst = pair.dst_cfg
    db = f"mysql:{dst.database.name}" if dst.database.engine == "mysql" else dst.database.name
    support = {sub: sha256_tree(base) for sub, base in (
        ("catalogs", dst.layout.catalogs), ("config", dst.layout.cache_tree("config")), ("mappings", dst.layout.mappings))}
    return _rows(db), support


def _interrupts(pair):
    dst = pair.dst_cfg
    args = ["mirror", "--obs", "hst", "--src", "test", "--yes"]
    env = pair.ops["dev"].env
    schema = dst.database.name if dst.database.engine == "mysql" else None
    assert pair.mirror("--yes").returncode == 0  # dev has a catalog to serve from here on
    new = _state(pair)
    with kept_answering(dst.local_url, "hst"):
        _interrupt_loop(pair, args, env, schema, new)


def _interrupt_loop(pair, args, env, schema, new):
    dst = pair.dst_cfg

    def move_on():
        (dst.layout.catalogs / "moved-on.cat").write_text("only on dev\n")
        return _state(pair)

    old = move_on()
    cases = [("point", p, s) for p in POINTS for s in ("sigint", "sigterm")]
    cases += [("moment", i, ("sigint", "sigterm")[i % 2]) for i in range(RANDOM_RUNS)]
    rng = random.Random(30)
    runs = []
    for how, where, sig in cases:
        if how == "point":
            run = at_failpoint(args, env, where, sig)
            assert not run.finished_first, f"{where}: {run.describe()}"
        else:
            run = at_moment(args, env, dst.layout.lock, rng.uniform(*DELAYS), sig, group=bool(where % 3))
            runs.append(run)
        run.check()
        assert health.answers(dst.local_url), run.describe()
        assert _state(pair) in (old, new), f"neither the old nor the new state\n{run.describe()}"
        assert leftovers(dst, schema) == [], run.describe()
        again = pair.mirror("--yes")
        assert again.returncode == 0, again.stdout + again.stderr
        assert _state(pair) == new
        old = move_on()
    assert_mostly_interrupted(runs, "inv mirror")


def test_interrupting_mirror_sqlite(pair):
    _interrupts(pair)


def test_interrupting_mirror_mariadb(mysql_pair):
    _interrupts(mysql_pair)
