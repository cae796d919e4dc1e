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
                                200,000) ÷ `find CACHE -type f -printf '%s %p\\n'`. Target <= 2.

Sizes: flags or BENCH_BIG, BENCH_BIG_SIZE, BENCH_SMALL, BENCH_SMALL_SIZE, BENCH_QUICK,
BENCH_REPEATS (the defaults are the issue's; run a smaller smoke with e.g. `--big 100
--small 2000 --quick 20000`). Needs only the stack. Exits 0 when it measured.
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


def seed(cfg, count: int, size: int, prefix: str, rng: random.Random) -> None:
    """``count`` references of ``size`` bytes in the cache, and their catalog rows."""
    refs = cfg.layout.references
    block = rng.randbytes(size + 4096)
    rows = []
    for i in range(count):
        name = f"{prefix}{i:07d}_flt.fits"
        data = block[i % 4096: i % 4096 + size]
        (refs / name).write_bytes(data)
        rows.append((name, "hst", "reference", "acs", "biasfile", size, hashlib.sha1(data).hexdigest(),
                     "operational", 0, 0, "2026-01-01 00:00:00", ""))
    con = sqlite3.connect(cfg.database.name)
    try:
        con.executemany(f"INSERT INTO catalog_catalogfile ({COLUMNS}) VALUES ({', '.join('?' * 12)})", rows)
        con.commit()
    finally:
        con.close()


def alternate(ours: list, plain: list, run_ours, run_plain, repeats: int) -> None:
    for r in range(repeats):
        if r % 2 == 0:
            ours.append(run_ours())
            plain.append(run_plain())
        else:
            plain.append(run_plain())
            ours.append(run_ours())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=_env_int("BENCH_BIG", 2000))
    parser.add_argument("--big-size", type=int, default=_env_int("BENCH_BIG_SIZE", 1 << 20))
    parser.add_argument("--small", type=int, default=_env_int("BENCH_SMALL", 20_000))
    parser.add_argument("--small-size", type=int, default=_env_int("BENCH_SMALL_SIZE", 2048))
    parser.add_argument("--quick", type=int, default=_env_int("BENCH_QUICK", 200_000))
    parser.add_argument("--repeats", type=int, default=_env_int("BENCH_REPEATS", 5))
    args = parser.parse_args()
    why = missing_prerequisite("find", "xargs", "sha1sum")
    if why:
        print(f"cannot measure: {why}", file=sys.stderr)
        return 1

    from support import free_port, make_configs

    from crdsops.config.loader import load_config

    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-check-cache-"))
    try:
        configs = make_configs(where, {("hst", "django"): {
            "root": str(where / "{observatory}-{kind}"), "web": {"port": free_port()},
            "backups": {"private_dir": "{root}/backups", "shared_dir": str(where / "shared")}}})
        env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(where / "installed.json"))
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

        sha1_ours = [str(INV), "check-cache", "--sha1"]
        sha1_plain = ["/bin/sh", "-c", f"find {cache} -type f -print0 | xargs -0 sha1sum > /dev/null"]
        timed(sha1_ours, env)  # warm-up: the page cache, bytecode
        timed(sha1_plain, env)
        ours, plain = [], []
        alternate(ours, plain, lambda: timed(sha1_ours, env), lambda: timed(sha1_plain, env), args.repeats)
        note(f"check-cache --sha1 median {sorted(ours)[len(ours) // 2]:.2f}s, "
             f"find | xargs sha1sum median {sorted(plain)[len(plain) // 2]:.2f}s")
        figure("check_cache_sha1_vs_sha1sum", ratio_of_medians(ours, plain), "<= 0.7")

        more = max(0, args.quick - args.big - args.small)
        start = time.perf_counter()
        seed(cfg, more, 64, "tiny", rng)
        note(f"quick mode over {args.big + args.small + more} files (seeded {more} more in "
             f"{time.perf_counter() - start:.1f}s)")
        quick_ours = [str(INV), "check-cache"]
        quick_plain = ["/bin/sh", "-c", f"find {cache} -type f -printf '%s %p\\n' > /dev/null"]
        timed(quick_ours, env)
        timed(quick_plain, env)
        ours, plain = [], []
        alternate(ours, plain, lambda: timed(quick_ours, env), lambda: timed(quick_plain, env), args.repeats)
        note(f"check-cache median {sorted(ours)[len(ours) // 2]:.2f}s, find -printf median "
             f"{sorted(plain)[len(plain) // 2]:.2f}s")
        figure("check_cache_quick_vs_find", ratio_of_medians(ours, plain), "<= 2")
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        if os.environ.get("BENCH_KEEP"):
            note(f"kept {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
