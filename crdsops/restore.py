"""Put a server back from a backup, keeping the old state until the new one is healthy.

Order (``restore``):

1. check the backup before touching anything: manifest, sha256 and size of every file,
   same observatory, same database engine (``check_backup``);
2. while the server keeps serving: take a safety backup of the current state
   (``safety_backup``), load the dump into a staging database and unpack the support
   directories next to their targets, all three at once;
3. stop the server; swap the staged database and directories in (the old ones are kept:
   a MySQL schema ``<name>_crdsops_old``, ``<db>.crdsops-old``, ``<dir>.crdsops-old``);
4. start the server; health check: ``get_server_info`` answers and the catalog counts
   equal the manifest's (``health_check``);
5. on any failure after the stop: stop, swap the old state back (or, if that fails,
   restore the safety backup), start again, and say so; on success drop the old state.

``inv mirror`` runs the same phases with its own extra work (the cache sync) alongside:
``check_backup``, ``stage_while_serving`` (step 2), ``swap_and_check`` (steps 3 to 5).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import failpoints, health, service
from crdsops import manifest as manifest_mod
from crdsops.backup import create, support_dirs
from crdsops.config import ServerConfig
from crdsops.dbdump import Engine, engine_for, open_decompressed
from crdsops.errors import CrdsOpsError
from crdsops.serverlock import server_lock

COUNT_KEYS = ("references", "mappings", "contexts", "operational_context")


class BackupRefused(CrdsOpsError):
    """The backup failed verification or belongs elsewhere; nothing was touched."""


def identity_problems(config: ServerConfig, data: dict) -> list[str]:
    server = data.get("server") or {}
    problems = []
    if server.get("observatory") != config.observatory:
        problems.append(f"it is a backup of {server.get('observatory')!r} ({server.get('observatory')}."
                        f"{server.get('kind')}), not of {config.observatory}")
    engine = (data.get("database") or {}).get("engine")
    if engine != config.database.engine:
        problems.append(f"its database is {engine}, this server's is {config.database.engine}")
    return problems


def check_backup(config: ServerConfig, backup: Path) -> dict:
    """The manifest of ``backup`` if it verifies and fits ``config``; else raise BackupRefused."""
    problems = manifest_mod.verify(backup)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BackupRefused(f"refusing backup {backup}: {'; '.join(problems[:3])}{more}; nothing was changed")
    data = manifest_mod.load(backup)
    problems = identity_problems(config, data)
    if problems:
        raise BackupRefused(f"refusing backup {backup} for {config.name}: {'; '.join(problems)}; nothing was changed")
    return data


def safety_backup(config: ServerConfig, say=print) -> Path:
    """A full backup of the current state (never published, not subject to this run's retention)."""
    return create(config, say=say, purpose="safety", publish=False, retention=False)


class SupportRestore:
    """Unpack a backup's support directories next to their targets; swap them by rename."""

    def __init__(self, config: ServerConfig):
        self.targets = support_dirs(config)
        self.swapped: list[str] = []

    @staticmethod
    def staging(target: Path) -> Path:
        return target.with_name(target.name + ".crdsops-new")

    @staticmethod
    def old(target: Path) -> Path:
        return target.with_name(target.name + ".crdsops-old")

    def stage(self, backup: Path, data: dict) -> None:
        for label, target in self.targets.items():
            entry = (data.get("support") or {}).get(label)
            if not entry:
                raise CrdsOpsError(f"backup {backup} has no {label} archive")
            staging = self.staging(target)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True, mode=0o700)
            source = open_decompressed(backup / entry["file"])
            tar = subprocess.Popen(["tar", "-C", str(staging), "-xf", "-"], stdin=source.stdout,
                                   stderr=subprocess.PIPE)
            source.stdout.close()
            err = tar.stderr.read().decode(errors="replace")
            if tar.wait() != 0 or source.wait() != 0:
                shutil.rmtree(staging, ignore_errors=True)
                raise CrdsOpsError(f"unpacking {entry['file']} failed: {err.strip()[-200:] or 'decompression error'}")

    def swap_in(self) -> None:
        for label, target in self.targets.items():
            staging, old = self.staging(target), self.old(target)
            if not staging.exists():
                raise CrdsOpsError(f"nothing staged for {label} at {staging}")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.rename(target, old)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
            self.swapped.append(label)

    def swap_back(self) -> None:
        for label in reversed(self.swapped):
            target = self.targets[label]
            old = self.old(target)
            if old.exists():
                if target.exists():
                    os.rename(target, self.staging(target))
                os.rename(old, target)
                shutil.rmtree(self.staging(target), ignore_errors=True)
        self.swapped = []

    def discard_old(self) -> None:
        for target in self.targets.values():
            shutil.rmtree(self.old(target), ignore_errors=True)

    def discard_staging(self) -> None:
        for target in self.targets.values():
            shutil.rmtree(self.staging(target), ignore_errors=True)


def health_check(config: ServerConfig, data: dict) -> list[str]:
    """What is wrong with the running server compared with the manifest ``data`` (empty: healthy).

    Called right after ``service.start``, which returns only once ``get_server_info``
    answered (on a large catalog, fetching that again would cost a second download).
    """
    failpoints.hit("restore.health")
    try:
        counts = health.rpc(config.local_url, "get_catalog_counts", timeout=15)
    except CrdsOpsError as err:
        return [str(err)]
    problems = []
    # a mirror must leave the server answering as itself, not as the source it copied
    if (counts.get("observatory"), counts.get("kind")) != (config.observatory, config.kind):
        problems.append(f"{config.local_url} answers as {counts.get('observatory')}.{counts.get('kind')}, "
                        f"not {config.name}")
    expected = (data.get("database") or {}).get("counts") or {}
    return problems + [f"{key} is {counts.get(key)!r}, the backup has {expected.get(key)!r}"
                       for key in COUNT_KEYS if counts.get(key) != expected.get(key)]


def plan(config: ServerConfig, backup: Path) -> tuple[list[str], list[str]]:
    """(steps, problems) for restoring ``backup``, from read-only probes."""
    problems = manifest_mod.verify(backup)
    data = None
    if not problems:
        data = manifest_mod.load(backup)
        problems = identity_problems(config, data)
    running = service.running_pid(config) is not None
    engine = engine_for(config)
    described = ""
    if data:
        counts = data["database"].get("counts") or {}
        server = data["server"]
        described = (f" ({server['observatory']}.{server['kind']} from {server['host']}, made {data['created']}, "
                     f"{counts.get('references')} references, {counts.get('mappings')} mappings, "
                     f"context {counts.get('operational_context')})")
    steps = [
        f"restore {config.name} from {backup.resolve()}{described}",
        "verify its manifest, sha256 and size of every file, observatory and engine: "
        + ("ok" if not problems else "FAILED: " + "; ".join(problems[:3])),
        f"while serving: safety backup of the current state into {config.backups.private_dir}",
        f"while serving: load the dump into staging ({engine.describe()}), unpack "
        + ", ".join(support_dirs(config)) + " next to their targets",
        f"stop {config.name} ({'running now' if running else 'not running now'}); swap the database and "
        "the support directories in (the old ones kept)",
        f"start {config.name}; health check at {config.local_url}: get_server_info answers and the catalog "
        "counts equal the backup's",
        "if anything fails: stop, swap the old state back (or restore the safety backup), start again",
    ]
    return steps, problems


@dataclass
class Staged:
    """What ``stage_while_serving`` prepared: ready to swap in, nothing live changed yet."""

    engine: Engine
    support: SupportRestore
    safety: Path
    results: dict = field(default_factory=dict)  # label -> result of each extra job
    took: dict = field(default_factory=dict)  # label -> seconds

    def discard(self) -> None:
        self.engine.discard_staging()
        self.support.discard_staging()


def stage_while_serving(config: ServerConfig, backup: Path, data: dict, say=print,
                        extra: dict | None = None, what: str = "") -> Staged:
    """Take a safety backup, stage the database and the support directories, side by side.

    ``extra`` maps labels to callables run alongside (``inv mirror`` syncs the file cache
    there). If anything fails, the staging is dropped and CrdsOpsError says nothing changed.
    """
    engine = engine_for(config)
    support = SupportRestore(config)
    dump = backup / data["database"]["file"]
    took: dict[str, float] = {}

    def timed(label, func, *args):
        start = time.monotonic()
        try:
            return func(*args)
        finally:
            took[label] = time.monotonic() - start

    work = {"safety backup": (safety_backup, config, lambda *_: None),
            "database staged": (engine.stage, dump),
            "support staged": (support.stage, backup, data)}
    work.update({label: (func,) for label, func in (extra or {}).items()})
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(work)) as pool:
        jobs = {label: pool.submit(timed, label, *call) for label, call in work.items()}
        failed, results = [], {}
        for label, job in jobs.items():
            try:
                results[label] = job.result()
            except Exception as err:  # noqa: BLE001 - reported, then re-raised as one line
                failed.append(f"{label}: {err}")
    if failed:
        engine.discard_staging()
        support.discard_staging()
        raise CrdsOpsError(f"{what or 'restore of ' + config.name} stopped before the swap ({'; '.join(failed)}); "
                           "nothing was changed, the server state is as it was")
    safety = results.pop("safety backup")
    say(f"safety backup: {safety} ({', '.join(f'{k} in {v:.1f}s' for k, v in took.items())})")
    return Staged(engine, support, safety, results, took)


def swap_and_check(config: ServerConfig, staged: Staged, data: dict, say=print,
                   what: str = "") -> float:
    """Stop, swap the staged state in, start, health check against ``data``; return the seconds stopped.

    On any failure: roll back to the old state (or the safety backup), start it, and raise
    CrdsOpsError saying so. On success the old state is dropped.
    """
    engine, support = staged.engine, staged.support
    stopped_at = time.monotonic()
    failpoints.hit("restore.staged")
    service.stop(config, say=say)
    swapped = {"db": False, "support": False}
    try:
        engine.swap_in()
        swapped["db"] = True
        support.swap_in()
        swapped["support"] = True
        failpoints.hit("restore.swapped")
        service.start(config, say=say)
        problems = health_check(config, data)
        if problems:
            raise CrdsOpsError("health check failed: " + "; ".join(problems))
    except BaseException as err:
        what = what or f"restore of {config.name}"
        say(f"{what} failed: {err}")
        _rollback(config, engine, support, swapped, staged.safety, say)
        raise CrdsOpsError(
            f"{what} failed ({err}); rolled back to the state before "
            f"(safety backup {staged.safety})"
        ) from None
    stopped = time.monotonic() - stopped_at
    say(f"{config.name} was stopped for {stopped:.1f}s")
    engine.discard_old()
    support.discard_old()
    return stopped


def restore(config: ServerConfig, backup: Path, say=print) -> Path:
    """Restore ``backup`` onto ``config``'s server; return the safety backup's path.

    Raises BackupRefused (nothing changed) or CrdsOpsError (rolled back, server running the
    previous state, or said otherwise in the message).
    """
    backup = Path(backup)
    with server_lock(config, "restore", say=say):
        data = check_backup(config, backup)
        say(f"backup {backup} verified ({len(data['files'])} files): {data['server']['observatory']}."
            f"{data['server']['kind']}, made {data['created']}")
        say("while serving: taking a safety backup, staging the database and the support directories ...")
        staged = stage_while_serving(config, backup, data, say=say)
        swap_and_check(config, staged, data, say=say, what=f"restore of {config.name} from {backup}")
        counts = data["database"].get("counts") or {}
        say(f"restored {config.name} from {backup}: {counts.get('references')} references, "
            f"{counts.get('mappings')} mappings, context {counts.get('operational_context')}; healthy")
        return staged.safety


def _rollback(config, engine, support, swapped, safety: Path, say) -> None:
    say(f"rolling back {config.name} to the state before the restore ...")
    try:
        service.stop(config, say=say)
    except CrdsOpsError as err:
        say(f"warning: could not stop {config.name} for the rollback ({err})")
    try:
        if swapped["support"]:
            support.swap_back()
        if swapped["db"]:
            engine.swap_back()
        support.discard_staging()
        engine.discard_staging()
    except Exception as err:  # noqa: BLE001
        say(f"swapping the old state back failed ({err}); restoring the safety backup {safety} instead")
        data = manifest_mod.load(safety)
        engine.stage(safety / data["database"]["file"])
        engine.swap_in()
        engine.discard_old()
        sup = SupportRestore(config)
        sup.stage(safety, data)
        sup.swap_in()
        sup.discard_old()
    finally:
        try:
            service.start(config, say=say)
            say(f"{config.name} runs its previous state again")
        except CrdsOpsError as err:
            say(f"ERROR: could not start {config.name} after the rollback ({err}); start it with `inv run`")
