#!/usr/bin/env python3
"""What `inv check-cache` costs against the plain tools, same run, caches warmed.

An hst django server (SQLite, installed, not running) under a temporary directory; its
catalog seeded with rows inserted directly and its cache with the matching files.
Alternating, REPEATS times each:

  check_cache_sha1_vs_sha1sum   `inv check-cache --sha1` over BIG files of BIG_SIZE bytes and
                                SMALL files of SMALL_SIZE (default 2,000 x 1 MiB + 20,000 x
                                2 KiB) ÷ `find CACHE -type f -print0 | xargs -0 sha1sum` over
                                the same files. Target <= 0.7 on 2 cores.
  check_cache_quick_vs_find     `inv check-cache` (quick mode: stat of every file, catalog
                                read, orphans, mapping sha1s) over QUICK files (default
                                200,000) ÷ `find CACHE -type f -printf '%s %p\\n'`. Target <= 1.5.
                                After it, one `# make-up` line: the pieces of one quick check
                                timed in one process (catalog read, listing, the whole check)
                                and `inv --help check-cache` (process start, imports).

Sizes: flags or BENCH_BIG, BENCH_BIG_SIZE, BENCH_SMALL, BENCH_SMALL_SIZE, BENCH_QUICK,
BENCH_REPEATS (the defaults are the issue's; run a smaller smoke with e.g. `--big 100
--small 2000 --quick 20000`). BENCH_SCALE=1m is the million-file run: QUICK 1,000,000, no
sha1 part (BIG and SMALL 0 unless given), and the figure printed as
`check_cache_quick_vs_find_1m`; its tree is generated once and every repetition reuses it
(about 4-6 minutes on a quiet 2-core machine, within a bench's ten). BENCH_KEEP=1 keeps the
tree and BENCH_TREE=DIR reuses it in a later run (only what it lacks is added). Needs only
the stack. Exits 0 when it measured.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_STACK_PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
if _STACK_PYTHON.exists() and Path(sys.prefix).resolve() != _STACK_PYTHON.parent.parent.resolve():
    os.execv(_STACK_PYTHON, [str(_STACK_PYTHON), __file__, *sys.argv[1:]])  # the stack's inv, yaml

from common import CHECKOUT, INV, figure, missing_prerequisite, note, ratio_of_medians, timed  # noqa: E402

COLUMNS = ("name, observatory, filekind, instrument, reftype, size, sha1sum, state, blacklisted, rejected, "
           "delivery_date, description")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


SCALES = {"1m": 1_000_000}  # BENCH_SCALE shorthands: files of the quick figure
SEED_BATCH = 100_000  # rows inserted per transaction: a million rows never sit in memory at once


def seed(cfg, count: int, size: int, prefix: str, rng: random.Random) -> int:
    """``count`` references of ``size`` bytes in the cache, and their catalog rows; a kept tree's are kept."""
    refs = str(cfg.layout.references)
    block = rng.randbytes(size + 4096)  # drawn even when nothing is added: the next prefix's block stays the same
    sha1s = {}  # 4,096 distinct contents: a million files are not hashed a million times
    con = sqlite3.connect(cfg.database.name)
    try:
        done = con.execute("SELECT count(*) FROM catalog_catalogfile WHERE name LIKE ?", (f"{prefix}%",)).fetchone()[0]
        for first in range(done, count, SEED_BATCH):
            rows = []
            for i in range(first, min(count, first + SEED_BATCH)):
                name = f"{prefix}{i:07d}_flt.fits"
                data = block[i % 4096: i % 4096 + size]
                fd = os.open(f"{refs}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                sha1 = sha1s.get(i % 4096) or sha1s.setdefault(i % 4096, hashlib.sha1(data).hexdigest())
                rows.append((name, "hst", "reference", "acs", "biasfile", size, sha1,
                             "operational", 0, 0, "2026-01-01 00:00:00", ""))
            con.executemany(f"INSERT INTO catalog_catalogfile ({COLUMNS}) VALUES ({', '.join('?' * 12)})", rows)
            con.commit()
    finally:
        con.close()
    return max(0, count - done)


MAKEUP = """
import os, sys, time
from pathlib import Path
from crdsops.config.loader import load_config
from crdsops.data import cachecheck
from crdsops.db import catalog
cfg = load_config("hst", "django", Path(os.environ["CRDSOPS_CONFIGS"]))
def best(f):
    times = []
    for _ in range(int(sys.argv[1])):
        start = time.perf_counter(); f(); times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
print(f"catalog read {best(lambda: catalog.for_quick_check(cfg)):.2f}s, "
      f"listing (find, both trees) {best(lambda: cachecheck.list_trees(cfg)):.2f}s, "
      f"listing (os.scandir) {best(lambda: cachecheck.scan_tree(cfg.layout.references)):.2f}s, "
      f"check() in one process {best(lambda: cachecheck.check(cfg)):.2f}s")
"""


def makeup(env: dict, repeats: int) -> str:
    """The pieces of one quick check, medians of ``repeats``, timed in one process; and `inv`'s own start."""
    pieces = subprocess.run([sys.executable, "-c", MAKEUP, str(repeats)], cwd=CHECKOUT, env=env, check=True,
                            capture_output=True, text=True).stdout.strip()
    start = sorted(timed([str(INV), "--help", "check-cache"], env) for _ in range(3))[1]
    return f"{pieces}, `inv --help check-cache` {start:.2f}s"


def alternate(ours: list, plain: list, run_ours, run_plain, repeats: int) -> None:
    for r in range(repeats):
        if r % 2 == 0:
            ours.append(run_ours())
            plain.append(run_plain())
        else:
            plain.append(run_plain())
            ours.append(run_ours())


def arguments() -> argparse.Namespace:
    scale = os.environ.get("BENCH_SCALE", "")
    if scale and scale not in SCALES:
        raise SystemExit(f"BENCH_SCALE={scale}: give one of {', '.join(SCALES)}, or leave it unset")
    extra = 0 if scale else None  # the million-file run measures quick mode only, unless told
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=_env_int("BENCH_BIG", 2000 if extra is None else extra))
    parser.add_argument("--big-size", type=int, default=_env_int("BENCH_BIG_SIZE", 1 << 20))
    parser.add_argument("--small", type=int, default=_env_int("BENCH_SMALL", 20_000 if extra is None else extra))
    parser.add_argument("--small-size", type=int, default=_env_int("BENCH_SMALL_SIZE", 2048))
    parser.add_argument("--quick", type=int, default=_env_int("BENCH_QUICK", SCALES.get(scale, 200_000)))
    parser.add_argument("--repeats", type=int, default=_env_int("BENCH_REPEATS", 5))
    args = parser.parse_args()
    args.suffix = "_1m" if args.quick == SCALES["1m"] else ""  # the million-file figure has its own name
    return args


def sha1_figure(args, cache: str, env: dict) -> None:
    sha1_ours = [str(INV), "check-cache", "--sha1"]
    sha1_plain = ["/bin/sh", "-c", f"find {cache} -type f -print0 | xargs -0 sha1sum > /dev/null"]
    timed(sha1_ours, env)  # warm-up: the page cache, bytecode
    timed(sha1_plain, env)
    ours, plain = [], []
    alternate(ours, plain, lambda: timed(sha1_ours, env), lambda: timed(sha1_plain, env), args.repeats)
    note(f"check-cache --sha1 median {sorted(ours)[len(ours) // 2]:.2f}s, "
         f"find | xargs sha1sum median {sorted(plain)[len(plain) // 2]:.2f}s")
    figure("check_cache_sha1_vs_sha1sum", ratio_of_medians(ours, plain), "<= 0.7")


def quick_figure(args, cfg, cache: str, env: dict, rng: random.Random) -> None:
    more = max(0, args.quick - args.big - args.small)
    start = time.perf_counter()
    added = seed(cfg, more, 64, "tiny", rng)
    note(f"quick mode over {args.big + args.small + more} files (seeded {added} more in "
         f"{time.perf_counter() - start:.1f}s)")
    quick_ours = [str(INV), "check-cache"]
    quick_plain = ["/bin/sh", "-c", f"find {cache} -type f -printf '%s %p\\n' > /dev/null"]
    timed(quick_ours, env)
    timed(quick_plain, env)
    ours, plain = [], []
    alternate(ours, plain, lambda: timed(quick_ours, env), lambda: timed(quick_plain, env), args.repeats)
    note(f"check-cache median {sorted(ours)[len(ours) // 2]:.2f}s, find -printf median "
         f"{sorted(plain)[len(plain) // 2]:.2f}s")
    figure(f"check_cache_quick_vs_find{args.suffix}", ratio_of_medians(ours, plain), "<= 1.5")
    note(f"make-up: {makeup(env, 1 if args.suffix else 3)}")  # once at a million files: the budget


def bytecode(env: dict, where: Path) -> None:
    """Let the warm-up runs cache `inv`'s bytecode, as an installed stack has it, outside the checkout.

    With PYTHONDONTWRITEBYTECODE set (as in some shells here) every `inv` compiled its ~60
    crdsops modules again: 0.35 s of each run (cProfile), a cost no installed server pays.
    """
    if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        note("PYTHONDONTWRITEBYTECODE was set: unset for the measured commands")
    env["PYTHONPYCACHEPREFIX"] = str(where / "pycache")


def main() -> int:
    args = arguments()
    why = missing_prerequisite("find", "xargs", "sha1sum")
    if why:
        print(f"cannot measure: {why}", file=sys.stderr)
        return 1

    from support import free_port, make_configs

    from crdsops.config.loader import load_config

    kept = os.environ.get("BENCH_TREE")
    where = Path(kept) if kept else Path(tempfile.mkdtemp(prefix="crdsops-bench-check-cache-"))
    try:
        configs = where / "configs"
        if not (where / "installed.json").exists():
            configs = make_configs(where, {("hst", "django"): {
                "root": str(where / "{observatory}-{kind}"), "web": {"port": free_port()},
                "backups": {"private_dir": "{root}/backups", "shared_dir": str(where / "shared")}}})
        env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(where / "installed.json"))
        bytecode(env, where)
        if not kept:
            subprocess.run([str(INV), "install", "--obs", "hst", "--kind", "django"], cwd=CHECKOUT, env=env,
                           check=True, capture_output=True)
        cfg = load_config("hst", "django", configs)
        cache = str(cfg.cache)
        rng = random.Random(13)
        start = time.perf_counter()
        seed(cfg, args.big, args.big_size, "big", rng)
        seed(cfg, args.small, args.small_size, "small", rng)
        total = args.big * args.big_size + args.small * args.small_size
        note(f"seeded {args.big} x {args.big_size} B + {args.small} x {args.small_size} B "
             f"({total / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f}s; {os.cpu_count()} CPUs; "
             f"{args.repeats} repetitions, alternating")
        if args.big or args.small:
            sha1_figure(args, cache, env)
        quick_figure(args, cfg, cache, env, rng)
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        if kept or os.environ.get("BENCH_KEEP"):
            note(f"kept {where} (BENCH_TREE={where} reuses it)")
        else:
            shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
