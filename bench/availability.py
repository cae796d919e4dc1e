#!/usr/bin/env python3
"""Does any operation refuse a client? Failed client requests and the longest gap, per operation.

For each scenario, four client threads ask the server as a pipeline job does (the real crds
client's proxy: get_server_info, get_file_info_map, list_mappings, and sha1-checked reference
downloads; about 80 requests/s in all; no retry, as the client does not retry: tests/clientload.py)
from one second before the operation to one second after it. Figures per scenario:

  availability_<scenario>_failed         requests that failed (refused, reset, an HTTP error,
                                         a timeout, a wrong answer). Target <= 0.
  availability_<scenario>_longest_gap_s  the longest stretch with no successful answer.
                                         Target <= 2 (django_rerun: <= 0.5).

Scenarios (all by default; AVAILABILITY_ONLY=django_rerun,vm_restore picks some):

  django_rerun, django_backup, django_restore   hst django (runserver + SQLite): `inv rerun`,
                                         `inv backup`, `inv restore --yes` (of that backup)
  vm_rerun, vm_backup, vm_restore, vm_runtests  hst dev (Apache/mod_wsgi + MariaDB on a throwaway
                                         account): the same, and `inv runtests`
  mirror                                 `inv mirror --obs hst --src test --yes` on hst dev, from hst
                                         test on another "VM" reached over a real sshd (tests/vms.py)

One measurement per scenario (an operation is seconds to a minute; the failures are counts, not
ratios). Everything runs on this machine with private configs and is removed at the end. Needs
MariaDB with a passwordless root at 127.0.0.1:3306, Apache, sshd and rsync. Exit 0 when measured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
STACK_PYTHON = CHECKOUT / ".venv" / "bin" / "python"
if STACK_PYTHON.exists() and Path(sys.prefix).resolve() != STACK_PYTHON.parent.parent.resolve():
    os.execv(STACK_PYTHON, [str(STACK_PYTHON), __file__, *sys.argv[1:]])  # the stack's inv and crds client
sys.path[:0] = [str(CHECKOUT), str(CHECKOUT / "tests")]

from clientload import under_load  # noqa: E402

# scenario: (which servers, the `inv` arguments on the server measured)
SCENARIOS = {
    "django_rerun": ("django", ("rerun",)),
    "django_backup": ("django", ("backup",)),
    "django_restore": ("django", ("restore", "--yes")),
    "vm_rerun": ("vm", ("rerun",)),
    "vm_backup": ("vm", ("backup",)),
    "vm_restore": ("vm", ("restore", "--yes")),
    "vm_runtests": ("vm", ("runtests",)),
    "mirror": ("mirror", ("mirror", "--obs", "hst", "--src", "test", "--yes")),
}
GAP_TARGET = {"django_rerun": 0.5}


def selected() -> list[str]:
    only = [name for name in os.environ.get("AVAILABILITY_ONLY", "").split(",") if name]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"cannot measure: unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [name for name in SCENARIOS if not only or name in only]


def inv(ops, *args, timeout=900):
    """`inv ARGS` as the operator; a failure stops the bench with its last lines."""
    result = ops.inv(*args, check=False, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"inv {' '.join(args)} failed (exit {result.returncode}): {tail}")
    return result


# --- the servers of each group: (the operator on the server measured, its URL, clean-up) ----------

def django_server(where: Path):
    from support import Ops, local_overrides, make_configs

    ops = Ops(where, make_configs(where, {("hst", "django"): local_overrides(where)}))
    inv(ops, "install", "--obs", "hst", "--kind", "django")
    inv(ops, "run")
    return ops, ops.config("hst", "django").local_url, lambda: ops.inv("stop", check=False)


def vm_server(where: Path):
    from support import make_configs
    from vmkinds import SKIP_REASON, Account, vm_ops, vm_overrides

    from crdsops.runtime.backends.modwsgi import ModWsgiBackend

    if SKIP_REASON:
        raise RuntimeError(SKIP_REASON)
    account = Account("avail")
    account.create()
    account.grant_staging()  # a restore stages the database beside the live one
    option_file = account.write_option_file(where / "hst-dev.my.cnf")
    ops = vm_ops(where, make_configs(where, {("hst", "dev"): vm_overrides(where, account, option_file)}))

    def close():
        try:
            ops.inv("stop", check=False)
            ModWsgiBackend().sweep(ops.config("hst", "dev"))
        finally:
            account.drop_staging()
            account.drop()

    try:
        inv(ops, "install", "--obs", "hst", "--kind", "dev")
        inv(ops, "manage", "--", "seed_demo")
        inv(ops, "run")
    except BaseException:
        close()
        raise
    return ops, ops.config("hst", "dev").local_url, close


def mirror_servers(where: Path):
    """hst test (running, its shared latest made by `inv backup`) on 127.0.0.2, hst dev running on 127.0.0.3."""
    from vms import Fleet

    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    fleet = Fleet(where)
    try:
        src, dst = fleet.ops["test"], fleet.ops["dev"]
        inv(src, "install", "--obs", "hst", "--kind", "test")
        inv(src, "manage", "--", "seed_demo")
        inv(src, "run")
        inv(src, "backup")
        inv(dst, "install", "--obs", "hst", "--kind", "dev")
        inv(dst, "manage", "--", "seed_demo")  # files for its clients to download before the mirror
        inv(dst, "run")
    except BaseException:
        fleet.close()
        raise
    return dst, dst.config("hst", "dev").local_url, fleet.close


GROUPS = {"django": django_server, "vm": vm_server, "mirror": mirror_servers}


# --- measuring ---------------------------------------------------------------------------------

def measure(name: str, ops, url: str, done: set[str]):
    """The load around the scenario's operation; its report. A restore needs a backup first."""
    group, args = SCENARIOS[name]
    if args[0] == "restore" and f"{group}_backup" not in done:
        inv(ops, "backup")  # untimed: the backup the restore restores
    _result, report = under_load(url, "hst", lambda: inv(ops, *args, timeout=1800))
    done.add(name)
    return report


def _measure_all(names, ops, url) -> dict:
    done: set[str] = set()
    reports = {}
    for name in names:
        reports[name] = measure(name, ops, url, done)
        print(f"# {name}: {reports[name].describe()}", flush=True)
    return reports


def print_table(reports: dict) -> None:
    print(f"{'scenario':<16} {'requests':>8} {'failed':>6}  {'by kind':<34} {'longest gap':>11}")
    for name, report in reports.items():
        kinds = ", ".join(f"{kind} {n}" for kind, n in report.failures.items()) or "-"
        print(f"{name:<16} {len(report.requests):>8} {report.failed:>6}  {kinds:<34} {report.longest_gap:>9.2f} s")
    for name, report in reports.items():
        print(f"availability_{name}_failed = {report.failed} (target <= 0)")
        print(f"availability_{name}_longest_gap_s = {report.longest_gap:.2f} "
              f"(target <= {GAP_TARGET.get(name, 2)})", flush=True)


def main() -> int:
    names = selected()
    for tool in ("rsync", "ssh", "/usr/sbin/sshd", "mysql"):
        if any(SCENARIOS[n][0] in ("mirror", "vm") for n in names) and not shutil.which(tool):
            print(f"cannot measure: {tool} is missing", file=sys.stderr)
            return 1
    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-availability-", dir="/tmp"))
    where.chmod(0o755)  # the web user enters the VM kind's root
    reports = {}
    try:
        for group in GROUPS:
            mine = [n for n in names if SCENARIOS[n][0] == group]
            if mine:
                (where / group).mkdir(mode=0o755)
                reports.update(_measure_group(group, mine, where))
    except (RuntimeError, subprocess.SubprocessError, OSError) as err:
        print(f"cannot measure: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(where, ignore_errors=True)
    print_table(reports)
    return 0


def _measure_group(group: str, names: list[str], where: Path) -> dict:
    ops, url, close = GROUPS[group](where / group)
    try:
        return _measure_all(names, ops, url)
    finally:
        close()


if __name__ == "__main__":
    sys.exit(main())
