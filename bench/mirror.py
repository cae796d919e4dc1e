#!/usr/bin/env python3
"""What `inv mirror` costs, measured against the plain tools in the same run.

Figures (medians of the repetitions):

  mirror_cache_sync_vs_rsync   the mirror's cache-sync step (crdsops.remote.rsync: one rsync
                               pass over our host-key-checked SSH, then the held-back
                               deletions) ÷ a plain `rsync -a --delete` over the same SSH
                               between the same trees; 20,000 files, 1% changed before each
                               repetition (rewritten, added, deleted), the two alternating.
                               Target <= 1.2.
  mirror_downtime_longest_gap_s the longest gap between answers to get_server_info, polled
                               every 100 ms, during a full `inv mirror --obs hst --src test`
                               whose staging database restore alone takes >= 10 s (both
                               servers on MariaDB; the source padded with rows until its
                               dump takes that long to load, calibrated by a first mirror;
                               its shared latest made by a real `inv backup`). Target <= 2.
  mirror_downtime_vs_restore   that gap ÷ the restore time (how much of the restore the
                               server is down for). Target <= 0.2.

  mirror_sync_vs_rsync_200k    the mirror's catalog-driven cache sync (crdsops.remote.catalog_sync:
                               the source backup's listing, made untimed as `inv backup` makes it,
                               compared by stat with this cache, then `rsync --files-from` and the
                               held-back deletions) ÷ `rsync -a --delete` over the same SSH between
                               the same trees; 200,000 files (BENCH_SYNC_FILES), 1% changed before
                               each repetition (the first one has no record of an earlier sync, the
                               others do). Ours runs over the mirror's one SSH connection
                               (crdsops.remote.sshmux), opened before the timing as the mirror's
                               probes open it; plain rsync opens its own. Target <= 0.2.
  mirror_sync_connect_s        beside it: one plain `ssh HOST true` in the same rounds, what
                               connecting once costs (the mirror pays it once, for its probes).
  mirror_noop_sync_vs_rsync_200k  the same with nothing changed. Target <= 0.1.
  mirror_sync_peak_rss_bytes_per_file  the peak RSS the catalog-driven sync adds to its process
                               (a child that imports first: its peak RSS after the sync of the
                               1%-changed tree minus its RSS before) ÷ files, with no record of an
                               earlier sync (the full stat pass: a record makes it a few bytes).
                               Target <= 200.
  mirror_cross_engine_downtime_s  the longest gap between answers to get_server_info during
                               `inv mirror` of a MariaDB source with 500,000 catalog rows
                               (BENCH_CROSS_ROWS) onto a SQLite destination. Target <= 2.

Run only some with BENCH_ONLY=sync,noop,downtime,cross (default: all). BENCH_SCALE=1m (with
BENCH_ONLY=noop): the catalog-driven figures over 10^6 files, named ..._1m, with
mirror_plan_seconds_1m (the plan's seconds) beside them. Everything runs on this machine: the
source host is an sshd on 127.0.0.2 with throwaway keys (tests/sshd.py), the two servers are
installed with private configs (tests/vms.py) on two databases of a throwaway account
(tests/mariadb.py). Needs openssh-server, rsync and a MariaDB with a passwordless root at
127.0.0.1:3306. Exit 0 when measured.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
STACK_PYTHON = CHECKOUT / ".venv" / "bin" / "python"
if STACK_PYTHON.exists() and Path(sys.prefix).resolve() != STACK_PYTHON.parent.parent.resolve():
    os.execv(STACK_PYTHON, [str(STACK_PYTHON), __file__, *sys.argv[1:]])  # the stack's inv, fab, crds
sys.path[:0] = [str(CHECKOUT), str(CHECKOUT / "tests")]

N_FILES = 20_000
# BENCH_SCALE=1m: the catalog-driven sync over a million files (the figures end in _1m), two
# rounds each way so the ten minutes of a benchmark hold the tree's making and copying
MILLION = os.environ.get("BENCH_SCALE", "").lower() == "1m"
SYNC_REPEATS = int(os.environ.get("BENCH_REPEATS", "2" if MILLION else "5"))
MIRROR_REPEATS = int(os.environ.get("BENCH_MIRROR_REPEATS", "3"))
LISTED_FILES = int(os.environ.get("BENCH_SYNC_FILES", "1000000" if MILLION else "200000"))
SCALE_NAME = "1m" if LISTED_FILES >= 10**6 else "200k" if LISTED_FILES == 200000 else f"{LISTED_FILES}"
CROSS_ROWS = int(os.environ.get("BENCH_CROSS_ROWS", "500000"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
RESTORE_TARGET_S = 15.0  # margin: the calibration run shares the CPU with its safety backup


def make_tree(root: Path, rng: random.Random) -> list[Path]:
    files = []
    for sub, count in (("mappings/hst", 400), ("references/hst", N_FILES - 400 - 10), ("config/hst", 10)):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            p = d / f"f{i:06d}.{'rmap' if sub.startswith('map') else 'fits'}"
            p.write_bytes(rng.randbytes(rng.randint(512, 4096)))
            files.append(p)
    (root / "pickles/hst").mkdir(parents=True, exist_ok=True)
    return files


def change_one_percent(root: Path, files: list[Path], rng: random.Random, round_: int) -> list[Path]:
    n = len(files) // 100
    for p in rng.sample(files, n - 20):
        p.write_bytes(rng.randbytes(rng.randint(512, 4096)))
    gone = rng.sample(files, 10)
    for p in gone:
        p.unlink()
    files = [f for f in files if f not in gone]
    for i in range(10):
        p = root / "references/hst" / f"new{round_:02d}_{i}.fits"
        p.write_bytes(rng.randbytes(1024))
        files.append(p)
    return files


def bench_cache_sync(where: Path) -> float:
    from sshd import SshLab

    from crdsops.remote import rsync as cachesync
    from crdsops.remote import ssh as remote

    lab = SshLab(where / "ssh")
    host = lab.host("127.0.0.2")
    try:
        rng = random.Random(6)
        src = where / "src"
        files = make_tree(src, rng)
        ours_dir, plain_dir = where / "ours", where / "plain"
        for d in (ours_dir, plain_dir):
            shutil.copytree(src, d, symlinks=True)
        target = remote.Target(host=host.address, user="root", port=host.port, key=lab.client_key,
                               known_hosts=lab.known_hosts)
        ssh = " ".join(shlex.quote(a) for a in remote.ssh_argv(target))
        trees = ["references/hst", "mappings/hst", "config/hst", "pickles/hst"]

        def ours():
            t = time.perf_counter()
            res = cachesync.pull(cachesync.Pull(target, str(src), ours_dir), trees)
            res.delete_extraneous(max_delete=10_000, must_have=("mappings/hst",))
            return time.perf_counter() - t

        def plain():
            t = time.perf_counter()
            subprocess.run(["rsync", "-a", "--delete", "-e", ssh, f"{host.address}:{src}/", f"{plain_dir}/"],
                           check=True, stdin=subprocess.DEVNULL)
            return time.perf_counter() - t

        ratios = []
        for r in range(SYNC_REPEATS):
            files = change_one_percent(src, files, rng, r)
            if r % 2 == 0:
                a, b = ours(), plain()
            else:
                b, a = plain(), ours()
            ratios.append(a / b)
            print(f"  round {r + 1}: ours {a:.2f}s, plain rsync {b:.2f}s", file=sys.stderr)
        mine = {str(p.relative_to(ours_dir)) for p in ours_dir.rglob("*") if p.is_file()}
        theirs = {str(p.relative_to(plain_dir)) for p in plain_dir.rglob("*") if p.is_file()}
        if mine != theirs:
            raise RuntimeError("the two trees differ after the sync; the measurement is not comparable")
        return statistics.median(ratios)
    finally:
        lab.close()


def make_listed_tree(root: Path, n: int, rng: random.Random) -> list[Path]:
    files = []
    for sub, count in (("references/hst", n - n // 100), ("pickles/hst", n // 100)):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            p = d / f"f{i:07d}.{'pkl' if sub.startswith('pick') else 'fits'}"
            p.write_bytes(rng.randbytes(rng.randint(256, 1024)))
            files.append(p)
    return files


def write_listings(src: Path, out: Path, previous: dict) -> dict[str, Path]:
    """The listings `inv backup` writes (its own functions), untimed: the backup made them already."""
    from crdsops.data import backup as backup_mod
    from crdsops.data.inventory import read_listing

    out.mkdir(parents=True, exist_ok=True)

    class _Cfg:  # what _list_references reads of a config
        class layout:
            references = src / "references" / "hst"

    backup_mod._list_references(_Cfg, out / "references.tsv", previous)
    backup_mod._list_tree(src / "pickles" / "hst", out / "pickles.tsv")
    previous.clear()
    previous.update(read_listing(out / "references.tsv"))
    return {"references/hst": out / "references.tsv", "pickles/hst": out / "pickles.tsv"}


RSS_CHILD = """
import sys, json
sys.path[:0] = {paths!r}
from pathlib import Path
from crdsops.remote import catalog_sync, rsync
from crdsops.remote.ssh import Target
target = Target(**json.loads(sys.argv[1]))
trees = {{k: Path(v) for k, v in json.loads(sys.argv[2]).items()}}
import gc
def status(key):  # KB
    return int(next(l for l in open("/proc/self/status") if l.startswith(key + ":")).split()[1])
gc.collect()
# ru_maxrss survives execve (it would report the bench's own peak): reset this process's
# high-water mark to its RSS now and read VmHWM after instead
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
before = status("VmRSS")
res = catalog_sync.pull_listed(rsync.Pull(target, sys.argv[3], Path(sys.argv[4])), trees, Path(sys.argv[5]))
res.delete_extraneous(max_delete=10**9)
after = status("VmHWM")  # the peak since the reset
print(max(0, after - before) * 1024)
"""


class ListedRounds:
    """The two sides of the catalog-driven sync figures, and what connecting costs, timed in the same rounds.

    Ours is the mirror's sync step as a mirror runs it: over the mirror's one SSH connection
    (``crdsops.remote.sshmux``), which the mirror's probes opened before; opening it is timed
    apart (``opens``). Plain rsync opens its own connection, as it always does. ``connects``:
    one plain ``ssh HOST true`` per round, what connecting costs once (key exchange, auth, one
    session), printed beside the ratio as ``mirror_sync_connect_s``. ``pieces``: ours taken apart
    (the plan, the rsync, the rest: deletions and the record; and one ``ssh HOST true`` over the
    open connection, the session every rsync over it starts with), for the make-up.
    """

    def __init__(self, target, src: Path, ours_dir: Path, plain_dir: Path, work: Path):
        self.target, self.src, self.ours_dir, self.plain_dir, self.work = target, src, ours_dir, plain_dir, work
        self.opens: list[float] = []
        self.connects: list[float] = []
        self.pieces: list[dict[str, float]] = []

    def ours(self, listings) -> float:
        from crdsops.remote import catalog_sync, rsync, sshmux

        piece: dict[str, float] = {}
        with sshmux.Master(self.target) as master, _timing(catalog_sync, "plan_sync", piece, "plan"), \
                _timing(rsync, "run_rsync", piece, "rsync"):
            t = time.perf_counter()
            master.open()
            self.opens.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = catalog_sync.pull_listed(rsync.Pull(master.target, str(self.src), self.ours_dir), listings,
                                           self.work)
            res.delete_extraneous(max_delete=10**9, must_have=("references/hst",))
            seconds = time.perf_counter() - t
            t = time.perf_counter()
            master.run("true")
            piece["session"] = time.perf_counter() - t
        piece["total"] = seconds
        piece["rest"] = seconds - piece.get("plan", 0) - piece.get("rsync", 0)
        self.pieces.append(piece)
        return seconds

    def make_up(self, rounds: slice) -> str:
        """The medians of ours' pieces over ``rounds``, one line."""
        chosen = self.pieces[rounds]
        med = {k: statistics.median(p.get(k, 0.0) for p in chosen)
               for k in ("total", "plan", "rsync", "rest", "session")}
        return (f"ours {med['total']:.2f}s = plan {med['plan']:.2f}s + rsync --files-from {med['rsync']:.2f}s "
                f"+ deletions and record {med['rest']:.2f}s; a session over the open connection "
                f"(`ssh HOST true`) {med['session']:.2f}s")

    def plain(self) -> float:
        t = time.perf_counter()
        subprocess.run(["rsync", "-a", "--delete", "-e", self._ssh(), f"{self.target.host}:{self.src}/",
                        f"{self.plain_dir}/"], check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - t

    def connect(self) -> float:
        from crdsops.remote import ssh as remote

        t = time.perf_counter()
        subprocess.run([*remote.ssh_argv(self.target), self.target.host, "true"], check=True,
                       stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        self.connects.append(seconds)
        return seconds

    def _ssh(self) -> str:
        from crdsops.remote import ssh as remote

        return " ".join(shlex.quote(a) for a in remote.ssh_argv(self.target))

    def rounds(self, src_files: list[Path], rng: random.Random, previous: dict, change: bool, label: str):
        """(median ratio, the files at the source afterwards) over SYNC_REPEATS rounds, the sides alternating."""
        ratios = []
        for r in range(SYNC_REPEATS):
            if change:
                src_files = change_listed(self.src, src_files, rng, r)
            listings = write_listings(self.src, self.work.parent / f"listings-{label}-{r}", previous)
            if r % 2 == 0:
                a, b, c = self.ours(listings), self.plain(), self.connect()
            else:
                c, b, a = self.connect(), self.plain(), self.ours(listings)
            ratios.append(a / b)
            print(f"  {label} round {r + 1}: ours {a:.2f}s (its connection opened before in {self.opens[-1]:.2f}s), "
                  f"plain rsync {b:.2f}s, ssh true {c:.2f}s", file=sys.stderr)
        return statistics.median(ratios), src_files


@contextlib.contextmanager
def _timing(module, name: str, into: dict, key: str):
    """For the block, add the seconds each call of ``module.name`` takes to ``into[key]``."""
    real = getattr(module, name)

    def timed_call(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - t

    setattr(module, name, timed_call)
    try:
        yield
    finally:
        setattr(module, name, real)


def bench_listed_sync(where: Path) -> tuple[float, float, float, float]:
    """(1% changed ratio, nothing changed ratio, peak RSS bytes per file, connect seconds): the catalog-driven sync."""
    import json

    from sshd import SshLab

    from crdsops.remote import ssh as remote

    lab = SshLab(where / "ssh")
    host = lab.host("127.0.0.2")
    try:
        rng = random.Random(7)
        src = where / "src"
        t = time.perf_counter()
        files = make_listed_tree(src, LISTED_FILES, rng)
        ours_dir, plain_dir, work = where / "ours", where / "plain", where / "work"
        for d in (ours_dir, plain_dir):
            shutil.copytree(src, d, symlinks=True)
        previous: dict = {}
        print(f"  {LISTED_FILES} files made and copied in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        target = remote.Target(host=host.address, user="root", port=host.port, key=lab.client_key,
                               known_hosts=lab.known_hosts)
        sides = ListedRounds(target, src, ours_dir, plain_dir, work)
        changed, files = sides.rounds(files, rng, previous, True, "1% changed")
        idle, files = sides.rounds(files, rng, previous, False, "nothing changed")
        print(f"  opening the mirror's one connection: median {statistics.median(sides.opens):.2f}s", file=sys.stderr)
        print(f"  make-up, 1% changed: {sides.make_up(slice(0, SYNC_REPEATS))}", file=sys.stderr)
        print(f"  make-up, nothing changed: {sides.make_up(slice(SYNC_REPEATS, None))}", file=sys.stderr)
        mine = {str(p.relative_to(ours_dir)) for p in ours_dir.rglob("*") if p.is_file()}
        theirs = {str(p.relative_to(plain_dir)) for p in plain_dir.rglob("*") if p.is_file()}
        if mine != theirs:
            raise RuntimeError("the two trees differ after the sync; the measurement is not comparable")

        files = change_listed(src, files, rng, 99)
        listings = write_listings(src, where / "listings-rss", previous)
        child = subprocess.run(
            [sys.executable, "-c", RSS_CHILD.format(paths=[str(CHECKOUT), str(CHECKOUT / "tests")]),
             json.dumps({"host": target.host, "user": target.user, "port": target.port, "key": str(target.key),
                         "known_hosts": str(target.known_hosts)}),
             json.dumps({k: str(v) for k, v in listings.items()}), str(src), str(ours_dir), str(where / "work-rss")],  # no record: the full stat pass, the peak
            capture_output=True, text=True, check=True)
        rss = int(child.stdout.strip().splitlines()[-1]) / LISTED_FILES
        plan = statistics.median(p.get("plan", 0.0) for p in sides.pieces[:SYNC_REPEATS])
        return changed, idle, rss, statistics.median(sides.connects), plan
    finally:
        lab.close()


def change_listed(root: Path, files: list[Path], rng: random.Random, round_: int) -> list[Path]:
    """1% of the files: most rewritten (another size), some deleted, as many added."""
    n = max(3, len(files) // 100)
    gone = rng.sample(files, n // 10 or 1)
    for p in rng.sample([f for f in files if f not in set(gone)], n - 2 * len(gone)):
        p.write_bytes(rng.randbytes(rng.randint(1025, 2048)))
    for p in gone:
        p.unlink()
    keep = set(gone)
    files = [f for f in files if f not in keep]
    for i in range(len(gone)):
        p = root / "references/hst" / f"new{round_:02d}_{i}.fits"
        p.write_bytes(rng.randbytes(512))
        files.append(p)
    return files


CATALOG_FILL = """
INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, sha1sum, state,
    blacklisted, rejected, delivery_date, description)
SELECT CONCAT('bench_', LPAD(seq, 7, '0'), '_flt.fits'), 'hst', 'reference',
       ELT(1 + seq % 5, 'acs', 'wfc3', 'cos', 'stis', 'nicmos'), 'biasfile', 1000 + seq * 37 % 99991, SHA1(seq),
       'operational', seq % 97 = 0, 0, TIMESTAMPADD(SECOND, seq, '2020-01-01'), CONCAT('bench row ', seq)
FROM seq_1_to_{rows};
"""


def mirror_from_test(dst) -> subprocess.CompletedProcess:
    """``inv mirror --obs hst --src test --yes`` on the destination host; a failure stops the bench."""
    result = dst.inv("mirror", "--obs", "hst", "--src", "test", "--yes", check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"inv mirror failed: {result.stderr.strip()}")
    return result


def bench_cross_engine(where: Path) -> float:
    """MariaDB source with CROSS_ROWS catalog rows mirrored onto a SQLite destination: longest gap."""
    from mariadb import MYSQL_MISSING, Account, root_sql
    from vms import Fleet

    from crdsops.db import mysql

    if MYSQL_MISSING:
        raise RuntimeError(MYSQL_MISSING)
    account = Account("bx")
    account.create()
    fleet = None
    try:
        option_file = mysql.write_option_file(where / "my.cnf", account.user, account.password)
        db = {"engine": "mysql", "option_file": str(option_file), "host": "127.0.0.1", "port": 3306,
              "name": f"{account.database}_test"}
        fleet = Fleet(where, {"test": {"database": db}})
        src, dst = fleet.ops["test"], fleet.ops["dev"]
        dst_cfg = dst.config("hst", "dev")
        src.inv("install", "--obs", "hst", "--kind", "test")
        src.inv("manage", "--", "seed_demo")
        root_sql(f"USE `{db['name']}`;" + CATALOG_FILL.format(rows=CROSS_ROWS))
        src.inv("run")
        src.inv("backup", timeout=900)
        dst.inv("install", "--obs", "hst", "--kind", "dev")
        dst.inv("run")

        def mirror() -> subprocess.CompletedProcess:
            return mirror_from_test(dst)

        gaps = []
        for r in range(MIRROR_REPEATS):
            result, gap = longest_unanswered_gap(dst_cfg.local_url, mirror)
            staged = re.search(r"database staged in ([\d.]+)s", result.stdout)
            gaps.append(gap)
            print(f"  cross-engine mirror {r + 1}: {CROSS_ROWS} rows staged in "
                  f"{staged.group(1) if staged else '?'}s, longest gap {gap:.2f}s", file=sys.stderr)
        return statistics.median(gaps)
    finally:
        try:
            if fleet is not None:
                fleet.close()
        finally:
            account.drop()


def longest_unanswered_gap(url: str, action):
    """Run ``action()`` while polling ``get_server_info`` at ``url`` every 0.1 s; (its result, longest gap)."""
    from crdsops.runtime import health

    answers: list[float] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            t = time.monotonic()
            try:
                health.rpc(url, "get_server_info", timeout=0.5)
                answers.append(time.monotonic())
            except Exception:  # noqa: BLE001 - not answering is what is measured
                pass
            stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.5)
    try:
        result = action()
    finally:
        time.sleep(0.5)
        stop.set()
        thread.join()
    return result, max(b - a for a, b in zip(answers, answers[1:], strict=False))


PADDING_SQL = """CREATE TABLE IF NOT EXISTS bench_padding (id INT PRIMARY KEY AUTO_INCREMENT,
  a CHAR(32) NOT NULL, b VARCHAR(64) NOT NULL, KEY bench_padding_a (a)) ENGINE=InnoDB;
INSERT INTO bench_padding (a, b) SELECT md5(seq + {offset}), repeat('x', 40) FROM seq_1_to_{rows};
"""


def pad(schema: str, rows: int, offset: int, chunk: int = 500_000) -> None:
    """More rows in a table of the source's own schema, so its dump takes a while to load.

    In chunks: the faster the restore, the more rows 10 s takes, and one statement for all
    of them can outlast root_sql's 60-s timeout.
    """
    from mariadb import root_sql

    for start in range(0, rows, chunk):
        root_sql(f"USE `{schema}`;\n" + PADDING_SQL.format(rows=min(chunk, rows - start), offset=offset + start))


def staged_seconds(output: str) -> float:
    found = re.search(r"database staged in ([\d.]+)s", output)
    if not found:
        raise RuntimeError("could not read the database staging time from the mirror's output")
    return float(found.group(1))


def bench_downtime(where: Path) -> tuple[float, float]:
    """Both servers on MariaDB (the VMs' engine; a SQLite restore is a file copy and never takes 10 s)."""
    from mariadb import MYSQL_MISSING, Account
    from vms import Fleet

    from crdsops.db import mysql

    if MYSQL_MISSING:
        raise RuntimeError(MYSQL_MISSING)
    account = Account("bm")
    account.create()
    fleet = None
    try:
        option_file = mysql.write_option_file(where / "my.cnf", account.user, account.password)
        db = {"engine": "mysql", "option_file": str(option_file), "host": "127.0.0.1", "port": 3306}
        fleet = Fleet(where, {kind: {"database": dict(db, name=f"{account.database}_{kind}")}
                              for kind in ("test", "dev")})
        src, dst = fleet.ops["test"], fleet.ops["dev"]
        src_cfg, dst_cfg = src.config("hst", "test"), dst.config("hst", "dev")
        src.inv("install", "--obs", "hst", "--kind", "test")
        src.inv("manage", "--", "seed_demo")
        src.inv("run")
        dst.inv("install", "--obs", "hst", "--kind", "dev")
        dst.inv("run")

        def mirror() -> subprocess.CompletedProcess:
            return mirror_from_test(dst)

        # calibrate: the restore (staging the dump) alone must take >= 10 s
        rows = 300_000
        pad(src_cfg.database.name, rows, 0)
        src.inv("backup", timeout=900)
        per_row = staged_seconds(mirror().stdout) / rows
        more = max(0, int(RESTORE_TARGET_S / per_row) - rows)
        pad(src_cfg.database.name, more, rows)
        rows += more
        src.inv("backup", timeout=900)  # a real `inv backup`: the shared latest the mirror reads
        print(f"  source: {rows} padding rows", file=sys.stderr)

        gaps, ratios = [], []
        for r in range(MIRROR_REPEATS):
            result, gap = longest_unanswered_gap(dst_cfg.local_url, mirror)
            restore = staged_seconds(result.stdout)
            gaps.append(gap)
            ratios.append(gap / restore)
            print(f"  mirror {r + 1}: restore {restore:.1f}s, longest gap {gap:.2f}s"
                  + ("  (WARNING: restore under 10 s)" if restore < 10 else ""), file=sys.stderr)
        return statistics.median(gaps), statistics.median(ratios)
    finally:
        try:
            if fleet is not None:
                fleet.close()  # no server or sshd may outlive the bench
        finally:
            account.drop()


def main() -> int:
    for tool in ("rsync", "ssh", "/usr/sbin/sshd"):
        if not shutil.which(tool):
            print(f"cannot measure: {tool} is missing (apt-get install rsync openssh-server)", file=sys.stderr)
            return 1
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        tmp = Path(tmp)
        try:
            if not ONLY or "sync" in ONLY:
                ratio = bench_cache_sync(tmp / "sync")
                print(f"mirror_cache_sync_vs_rsync = {ratio:.2f} (target <= 1.2)", flush=True)
                shutil.rmtree(tmp / "sync", ignore_errors=True)
            if not ONLY or "noop" in ONLY:
                changed, idle, rss, connect, plan = bench_listed_sync(tmp / "listed")
                n, big = SCALE_NAME, "_1m" if SCALE_NAME == "1m" else ""
                print(f"mirror_sync_vs_rsync_{n} = {changed:.3f} (target <= 0.2)", flush=True)
                print(f"mirror_sync_connect_s = {connect:.2f} (no target: one `ssh HOST true`, what connecting "
                      "costs once; the mirror pays it once, for its probes, not in the sync above)", flush=True)
                print(f"mirror_noop_sync_vs_rsync_{n} = {idle:.3f} (target <= 0.1)", flush=True)
                print(f"mirror_plan_seconds{big} = {plan:.2f} (no target: the plan of the 1%-changed sync)", flush=True)
                print(f"mirror_sync_peak_rss_bytes_per_file{big} = {rss:.0f} (target <= 200)", flush=True)
                shutil.rmtree(tmp / "listed", ignore_errors=True)
            if not ONLY or "cross" in ONLY:
                gap = bench_cross_engine(tmp / "cross")
                print(f"mirror_cross_engine_downtime_s = {gap:.2f} (target <= 2)", flush=True)
                shutil.rmtree(tmp / "cross", ignore_errors=True)
            if not ONLY or "downtime" in ONLY:
                gap, share = bench_downtime(tmp / "downtime")
                print(f"mirror_downtime_longest_gap_s = {gap:.2f} (target <= 2)")
                print(f"mirror_downtime_vs_restore = {share:.3f} (target <= 0.2)")
        except Exception as err:
            print(f"cannot measure: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
