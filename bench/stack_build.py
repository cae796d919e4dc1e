#!/usr/bin/env python3
"""Benchmark the stack build against the plain tools, in one run, alternating.

    stack_noop_build_vs_import_invoke   no-op `inv build` (lock unchanged) over
                                        `python -c "import invoke"`       (target <= 5)
    stack_fresh_build_vs_pip_install    `inv build` into a new prefix over `python3 -m venv`
                                        + plain `pip install --no-deps -r` of the same
                                        pinned packages (name==version) into a new venv
                                                                          (target <= 1.3)

Run from the repository root: bench/stack_build [--reps N] [--noop-reps N]. Needs only
python3 and the network the build needs (PyPI); it builds its stacks under a temporary
directory (first one untimed, to warm pip's cache for both sides) and removes them.
Prints medians; exits 0 when it measured, 1 when it could not.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("CRDSOPS_STACK_PYTHON", "/usr/bin/python3")


def timed(args, **kw) -> float:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))[:200]} exited {proc.returncode}: {proc.stdout[-800:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="fresh-build repetitions per side (default 3)")
    parser.add_argument("--noop-reps", type=int, default=9, help="no-op repetitions per side (default 9)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from crdsops.stack import condalock

    lock = condalock.read_lock(REPO / "conda-lock.yml")
    pinned = "".join(f"{p.name}=={p.version}\n" for p in lock.select("pip", {"main"}))
    work = pathlib.Path(tempfile.mkdtemp(prefix="crdsops-bench-"))
    try:
        req = work / "pinned.txt"
        req.write_text(pinned)
        base = work / "base"
        print(f"# warming up: building {base} from conda-lock.yml (untimed)", file=sys.stderr)
        timed([str(REPO / "bin" / "bootstrap")], env=dict(os.environ, STACK=str(base)))
        inv = [str(base / "bin" / "python"), "-m", "invoke", "-r", str(REPO)]

        def ours(i: int) -> float:
            prefix = work / f"ours-{i}"
            t = timed([*inv, "build", "--prefix", str(prefix), "--no-dev"])
            shutil.rmtree(prefix)
            return t

        def plain(i: int) -> float:
            venv = work / f"plain-{i}"
            t = timed([PYTHON, "-m", "venv", str(venv)])
            t += timed([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps",
                        "--disable-pip-version-check", "-q", "-r", str(req)])
            shutil.rmtree(venv)
            return t

        plain(-1)  # untimed: the plain side's index look-ups and cache warm too
        fresh_ours, fresh_plain = [], []
        for i in range(args.reps):
            for name, fn, out in ((("ours", ours, fresh_ours), ("plain", plain, fresh_plain))
                                  if i % 2 == 0 else (("plain", plain, fresh_plain), ("ours", ours, fresh_ours))):
                out.append(fn(i))
                print(f"# fresh {name} #{i + 1}: {out[-1]:.2f}s", file=sys.stderr)

        noop, imp = [], []
        for i in range(args.noop_reps):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    noop.append(timed([*inv, "build", "--prefix", str(base)]))
                else:
                    imp.append(timed([str(base / "bin" / "python"), "-c", "import invoke"]))
        print(f"# no-op inv build median {statistics.median(noop) * 1000:.0f} ms, "
              f"import invoke median {statistics.median(imp) * 1000:.0f} ms; "
              f"fresh build median {statistics.median(fresh_ours):.1f} s, "
              f"venv + pip install median {statistics.median(fresh_plain):.1f} s", file=sys.stderr)
        print(f"stack_noop_build_vs_import_invoke = {statistics.median(noop) / statistics.median(imp):.2f} (target <= 5)")
        print(f"stack_fresh_build_vs_pip_install = "
              f"{statistics.median(fresh_ours) / statistics.median(fresh_plain):.2f} (target <= 1.3)")
        return 0
    except Exception as err:  # could not measure: say why, exit non-zero
        print(f"bench/stack_build: could not measure: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
