"""Put a server back from a backup, keeping the old state until the new one is healthy.

Order (``plan`` shows these steps; ``restore`` runs them):

1. check the backup before touching anything: manifest, sha256 and size of every file,
   same observatory, same database engine (``check_backup``);
2. while the server keeps serving: take a safety backup of the current state, load the
   dump into a staging database and unpack the support directories next to their targets,
   all three at once (``stage_while_serving``); alongside, the quick cache check lists the
   cache and the staged mappings while the rows load and compares them with the staged
   catalog once loaded (reported after a healthy swap, as the check of the state now live),
   and ``ServerInfoWarmer`` precomputes get_server_info; if anything fails or is interrupted,
   the staging is removed and nothing live was touched;
3. stop the server; swap the staged database and directories in (the old ones are kept:
   a MySQL schema ``<name>_crdsops_old``, ``<db>.crdsops-old``, ``<dir>.crdsops-old``);
4. start the server; health check: ``get_server_info`` answers and the catalog counts
   equal the manifest's (``health_check``); the first ``get_server_info`` reads the
   download_metadata that ``ServerInfoWarmer`` computed from the staged database in step 2
   (when the live catalog's fingerprint matches), so the stopped window no longer holds a
   pass over the whole catalog;
5. on any failure or interrupt from the stop on: swap the old state back (or, if that
   fails, restore the safety backup), start the server again if it was running, and say
   so; the rollback finishes even through a second Ctrl-C. On success drop the old state.

``inv mirror`` runs the same phases with its own extra work (the cache sync) alongside:
``check_backup``, ``stage_while_serving`` (step 2), ``swap_and_check`` (steps 3 to 5).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.data import manifest as manifest_mod
from crdsops.data.backup import create, support_dirs
from crdsops.data.manifest import Manifest
from crdsops.db.compression import open_decompressed
from crdsops.db.engines import Engine, engine_for
from crdsops.errors import CrdsOpsError
from crdsops.parallel import JobsFailed, side_by_side
from crdsops.runtime import health, service
from crdsops.runtime.environ import manage, manage_failure, start_manage
from crdsops.runtime.lock import server_lock
from crdsops.steps import Plan, under_way

COUNT_KEYS = ("references", "mappings", "contexts", "operational_context")


class BackupRefused(CrdsOpsError):
    """The backup failed verification or belongs elsewhere; nothing was touched."""


def converts(config: ServerConfig, manifest: Manifest) -> bool:
    """Whether the backup's dump is of another engine that staging converts (MySQL down to SQLite)."""
    return manifest.database.engine == "mysql" and not config.database.is_mysql


def identity_problems(config: ServerConfig, manifest: Manifest, cross_engine: bool = False) -> list[str]:
    """Why ``manifest``'s backup does not fit ``config``; ``cross_engine``: a MySQL dump onto SQLite is fine."""
    server = manifest.server
    problems = []
    if server.observatory != config.observatory:
        problems.append(f"it is a backup of {server.observatory!r} ({server.name}), not of {config.observatory}")
    if manifest.database.engine != config.database.engine and not (cross_engine and converts(config, manifest)):
        problems.append(f"its database is {manifest.database.engine}, this server's is {config.database.engine}")
    return problems


def check_backup(config: ServerConfig, backup: Path, cross_engine: bool = False) -> Manifest:
    """The manifest of ``backup`` if it verifies and fits ``config``; else raise BackupRefused."""
    problems = manifest_mod.verify(backup)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BackupRefused(f"refusing backup {backup}: {'; '.join(problems[:3])}{more}; nothing was changed")
    manifest = Manifest.load(backup)
    problems = identity_problems(config, manifest, cross_engine)
    if problems:
        raise BackupRefused(f"refusing backup {backup} for {config.name}: {'; '.join(problems)}; nothing was changed")
    return manifest


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

    def stage(self, backup: Path, manifest: Manifest) -> None:
        for label, target in self.targets.items():
            interrupts.check()
            entry = manifest.support.get(label)
            if not entry:
                raise CrdsOpsError(f"backup {backup} has no {label} archive")
            staging = self.staging(target)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True, mode=0o700)
            source = open_decompressed(backup / entry.file)
            tar = subprocess.Popen(["tar", "-C", str(staging), "-xf", "-"], stdin=source.stdout,
                                   stderr=subprocess.PIPE)
            source.stdout.close()
            err = tar.stderr.read().decode(errors="replace")
            if tar.wait() != 0 or source.wait() != 0:
                shutil.rmtree(staging, ignore_errors=True)
                raise CrdsOpsError(f"unpacking {entry.file} failed: {err.strip()[-200:] or 'decompression error'}")

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


def health_check(config: ServerConfig, manifest: Manifest) -> list[str]:
    """What is wrong with the running server compared with ``manifest`` (empty: healthy).

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
    expected = manifest.counts
    return problems + [f"{key} is {counts.get(key)!r}, the backup has {expected.get(key)!r}"
                       for key in COUNT_KEYS if counts.get(key) != expected.get(key)]


@dataclass
class Staged:
    """What ``stage_while_serving`` prepared: ready to swap in, nothing live changed yet."""

    engine: Engine
    support: SupportRestore
    safety: Path
    results: dict = field(default_factory=dict)  # label -> result of each extra job
    took: dict = field(default_factory=dict)  # label -> seconds
    cache_check: object = None  # the quick check of the staged state: a Report, or the CrdsOpsError it raised

    def discard(self) -> None:
        self.engine.discard_staging()
        self.support.discard_staging()


def stage_while_serving(config: ServerConfig, backup: Path, manifest: Manifest, say=print,
                        extra: dict | None = None, what: str = "", check_cache: bool = False) -> Staged:
    """Take a safety backup, stage the database and the support directories, side by side.

    ``extra`` maps labels to callables run alongside (``inv mirror`` syncs the file cache
    there). If anything fails or is interrupted, every job is stopped, the staging is removed,
    and the error says nothing changed. ``check_cache``: the quick cache check of the staged
    catalog and mappings, as one more job (a restore leaves the rest of the cache as it is, so
    this is the check of the state it swaps in; run after the swap it cost 2.8 s of a 10-s
    restore of 500,000 rows); its Report, or the error that refused it, is ``Staged.cache_check``.
    """
    engine = engine_for(config)
    support = SupportRestore(config)
    dump = backup / manifest.database.file
    staged = {"support": threading.Event(), "database": threading.Event()}

    def stage_db():
        warmer = ServerInfoWarmer(config, engine)  # Django starts while the rows load
        try:
            if converts(config, manifest):  # a mirror from MySQL: Django's schema for SQLite, then the dump's rows
                engine.stage_from_mysql(dump, lambda path: _migrate_into(config, path), say=say)
            else:
                engine.stage(dump)
            staged["database"].set()
            warmer.finish(say)
        finally:
            warmer.abandon()

    def stage_support():
        support.stage(backup, manifest)
        staged["support"].set()

    def check_staged():
        """The quick cache check of what is staged: listed while the rows load, compared once loaded.

        Returned, not raised (a Report, or the CrdsOpsError that refused it): it never stops the restore."""
        from crdsops.data import cachecheck

        def ready(event) -> bool:  # False: the staging is being stopped
            while not event.wait(0.1):
                if interrupts.cancelled.is_set():
                    return False
            return True

        try:
            if not ready(staged["support"]):
                return None
            mappings = support.staging(support.targets["mappings"])
            listed = cachecheck.list_trees(config, mappings)
            if not ready(staged["database"]):
                return None
            return cachecheck.check(config, database=str(engine.staging), mappings=mappings, listed=listed)
        except CrdsOpsError as err:
            return err

    jobs = {"safety backup": lambda: safety_backup(config, lambda *_: None),
            "database staged": stage_db,
            "support staged": stage_support}
    if check_cache:
        jobs["cache checked"] = check_staged
    jobs.update(extra or {})
    try:
        outcome = side_by_side(jobs)
    except BaseException as err:
        with interrupts.shielded():
            engine.discard_staging()
            support.discard_staging()
            config.layout.server_info_warm.unlink(missing_ok=True)
        if isinstance(err, JobsFailed):
            raise CrdsOpsError(f"{what or 'restore of ' + config.name} stopped before the swap ({err}); "
                               "nothing was changed, the server state is as it was") from None
        raise
    results = dict(outcome.results)
    safety = results.pop("safety backup")
    cache_check = results.pop("cache checked", None)
    say(f"safety backup: {safety} ({', '.join(f'{k} in {v:.1f}s' for k, v in outcome.seconds.items())})")
    return Staged(engine, support, safety, results, outcome.seconds, cache_check)


class ServerInfoWarmer:
    """Precompute get_server_info's download_metadata from the staged database, for the first request
    after the restart (the server checks the catalog's fingerprint before it uses it); never fatal.

    ``manage.py warm_server_info --when-told`` starts with the staging (Django's start, 0.7 s,
    overlaps the load) and computes when ``finish`` tells it the database is staged.
    """

    def __init__(self, config: ServerConfig, engine: Engine):
        self.out = config.layout.server_info_warm
        self.args = ("warm_server_info", "--when-told", "--out", str(self.out))
        self.error = ""
        self.proc = None
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.proc = start_manage(config, *self.args, extra_env={"CRDS_DB_NAME": str(engine.staging)})
        except OSError as err:
            self.error = str(err)

    def finish(self, say=print) -> bool:
        if self.proc is not None:
            out, err = self.proc.communicate("go\n")
            if self.proc.returncode == 0:
                return True
            self.error = manage_failure(self.args, self.proc.returncode, err or out)
        say(f"warning: could not precompute server info from the staged database ({self.error}); "
            "the first request after the restart computes it")
        self.out.unlink(missing_ok=True)
        return False

    def abandon(self) -> None:
        """Stop it if it is still waiting or computing (the staging failed or was interrupted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _migrate_into(config: ServerConfig, path: Path) -> None:
    """Run the server's Django migrations into the SQLite file ``path`` (a new staging database)."""
    manage(config, "migrate", "--noinput", capture=True, extra_env={"CRDS_DB_ENGINE": "sqlite",
                                                                    "CRDS_DB_NAME": str(path)})


def swap_and_check(config: ServerConfig, staged: Staged, manifest: Manifest, say=print,
                   what: str = "") -> float:
    """Stop, swap the staged state in, start, health check against ``manifest``; return the seconds stopped.

    On any failure or interrupt from the stop on: roll back to the old state (or the safety
    backup), start it again if it was running, and raise (CrdsOpsError saying so, or the
    interrupt). On success the old state is dropped.
    """
    engine, support = staged.engine, staged.support
    what = what or f"restore of {config.name}"
    stopped_at = time.monotonic()
    swapped = {"db": False, "support": False}
    was_running = service.running_pid(config) is not None
    try:
        with under_way("stopping the server"):
            failpoints.hit("restore.staged")
            service.stop(config, say=say)
        with under_way("swapping the new state in"):
            engine.swap_in()
            swapped["db"] = True
            support.swap_in()
            swapped["support"] = True
            failpoints.hit("restore.swapped")
        with under_way("starting the server"):
            service.start(config, say=say)
        with under_way("the health check"):
            problems = health_check(config, manifest)
            if problems:
                raise CrdsOpsError("health check failed: " + "; ".join(problems))
    except BaseException as err:
        reason = interrupts.describe(err)
        say(f"{what} failed ({reason})")
        with interrupts.shielded("the rollback"):
            _rollback(config, engine, support, swapped, staged.safety, was_running, say)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise CrdsOpsError(
            f"{what} failed ({reason}); rolled back to the state before (safety backup {staged.safety})"
        ) from None
    stopped = time.monotonic() - stopped_at
    config.layout.server_info_warm.unlink(missing_ok=True)  # served its purpose: later starts compute it
    say(f"{config.name} was stopped for {stopped:.1f}s")
    with interrupts.shielded("dropping the old state"):  # the new state is live: never leave half of the old
        engine.discard_old()
        support.discard_old()
    return stopped


def _rollback(config, engine, support, swapped, safety: Path, was_running: bool, say) -> None:
    say(f"rolling back {config.name} to the state before ...")
    config.layout.server_info_warm.unlink(missing_ok=True)  # it describes the new state, not the old
    failpoints.hit("restore.rollback")
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
        manifest = Manifest.load(safety)
        engine.stage(safety / manifest.database.file)
        engine.swap_in()
        engine.discard_old()
        sup = SupportRestore(config)
        sup.stage(safety, manifest)
        sup.swap_in()
        sup.discard_old()
    finally:
        if was_running:
            try:
                service.start(config, say=say)
                say(f"{config.name} runs its previous state again")
            except CrdsOpsError as err:
                say(f"ERROR: could not start {config.name} after the rollback ({err}); start it with `inv run`")
        else:
            say(f"{config.name} has its previous state again (not started: it was not running before)")


# --- the whole restore ------------------------------------------------------------------------

class RestoreRun:
    """One restore of ``backup`` onto ``config``'s server: its plan and what each step made."""

    def __init__(self, config: ServerConfig, backup: Path, say=print):
        self.config, self.backup, self.say = config, Path(backup), say
        self.manifest: Manifest | None = None
        self.staged: Staged | None = None

    def plan(self) -> Plan:
        """The steps, with the backup verified now (the read-only probes run also for a dry run)."""
        config, backup = self.config, self.backup
        p = Plan(f"restoring {config.name}")
        p.problems = manifest_mod.verify(backup)
        if not p.problems:
            self.manifest = Manifest.load(backup)
            p.problems = identity_problems(config, self.manifest)
        running = service.running_pid(config) is not None
        engine = engine_for(config)
        described = f" ({self.manifest.describe()})" if self.manifest else ""
        p.add(f"restore {config.name} from {backup.resolve()}{described}")
        p.add("verify its manifest, sha256 and size of every file, observatory and engine: "
              + ("ok" if not p.problems else "FAILED: " + "; ".join(p.problems[:3])))
        p.add(f"while serving: safety backup of the current state into {config.backups.private_dir}; "
              f"load the dump into staging ({engine.describe()}), unpack "
              + ", ".join(support_dirs(config)) + " next to their targets", self._stage, name="staging")
        p.add(f"stop {config.name} ({'running now' if running else 'not running now'}); swap the database and "
              "the support directories in (the old ones kept); start it; health check at "
              f"{config.local_url}: get_server_info answers and the catalog counts equal the backup's",
              self._swap, name="swapping in")
        p.add("if anything fails: stop, swap the old state back (or restore the safety backup), start again")
        return p

    def _stage(self) -> None:
        m = self.manifest
        self.say(f"backup {self.backup} verified ({len(m.files)} files): {m.server.name}, made {m.created}")
        self.say("while serving: taking a safety backup, staging the database and the support directories ...")
        self.staged = stage_while_serving(self.config, self.backup, m, say=self.say, check_cache=True)

    def _swap(self) -> None:
        config, m = self.config, self.manifest
        swap_and_check(config, self.staged, m, say=self.say, what=f"restore of {config.name} from {self.backup}")
        counts = m.counts
        self.say(f"restored {config.name} from {self.backup}: {counts.get('references')} references, "
                 f"{counts.get('mappings')} mappings, context {counts.get('operational_context')}; healthy")


def plan(config: ServerConfig, backup: Path) -> Plan:
    return RestoreRun(config, backup).plan()


def restore(config: ServerConfig, backup: Path, say=print) -> Path:
    """Restore ``backup`` onto ``config``'s server; return the safety backup's path.

    Raises BackupRefused (nothing changed) or CrdsOpsError (rolled back, server running the
    previous state, or said otherwise in the message).
    """
    with server_lock(config, "restore", say=say):
        run = RestoreRun(config, backup, say)
        steps = run.plan()
        if steps.problems:
            raise BackupRefused(f"refusing backup {backup}: {'; '.join(steps.problems[:3])}; nothing was changed")
        steps.run()
        return run.staged.safety
