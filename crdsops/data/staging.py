"""Put a new state in place under a running server: stage it beside the live one, swap, roll back.

``inv restore`` and ``inv mirror`` both run these two phases:

1. ``stage_while_serving``: while the server keeps serving, side by side: the dump loaded
   into a staging database, the support directories unpacked next to their targets, and what
   the caller adds (a mirror's cache sync); with
   ``check_cache``, the quick cache check lists the cache and the staged mappings while the
   rows load (``Staged.listed``; the comparison with the catalog waits until the new state
   serves: ``cachecheck.closing_check(listed=...)``, off the way to serving); and ``ServerInfoWarmer`` precomputes
   get_server_info. If anything fails or is interrupted, every staged part is removed (each
   removal runs whatever an earlier one raised) and the error names the first cause: nothing
   live was touched.
2. ``swap_and_check``: under the running server, with its new requests held (``held``: the
   server's middleware waits while ``Layout.hold`` exists, then finds a new
   ``Layout.catalog_generation`` and drops what it cached), swap the staged database and
   directories in: MySQL with one atomic ``RENAME TABLE``, SQLite and the directories by
   rename (``files.exchange``: the live name is never missing); the old ones are kept (a
   MySQL schema ``<name>_crdsops_old``, ``<db>.crdsops-old``, ``<dir>.crdsops-old``). Then
   the health check (``get_server_info`` answers and the catalog counts equal the
   manifest's); each server process's first ``get_server_info`` reads the download_metadata
   the warmer computed (made for the catalog generation this swap writes, chosen when the
   staging starts; the server checks it, the swap's age and the highest id). A server that was not
   running is started after the swap. On any failure or interrupt: the reverse swap, held
   the same way, and say so; the rollback finishes even through a second Ctrl-C.
3. ``keep_safely``, once the new state serves (nothing of it is on the way to serving): the
   safety backup, made from the old state the swap kept (``backup.create(kept_old=True)``),
   then the old state dropped once that backup verifies. If it fails or is interrupted, the
   old state stays where the swap put it and a ``warning:`` line (also the audit's) says where
   and how to drop it; the restore itself has succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import cleanup, commands, failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.data.backup import create, support_dirs
from crdsops.data.manifest import Manifest
from crdsops.db.compression import open_decompressed
from crdsops.db.engines import Engine, engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import exchange, kept_beside, staged_beside, write_atomic
from crdsops.parallel import JobsFailed, side_by_side
from crdsops.runtime import health, service, taskrun
from crdsops.runtime.environ import manage, manage_failure, start_manage
from crdsops.steps import under_way

log = logging.getLogger(__name__)


def converts(config: ServerConfig, manifest: Manifest) -> bool:
    """Whether the backup's dump is of another engine that staging converts (MySQL down to SQLite)."""
    return manifest.database.engine == "mysql" and not config.database.is_mysql


class SupportRestore:
    """Unpack a backup's support directories next to their targets; swap them by rename."""

    def __init__(self, config: ServerConfig):
        self.targets = support_dirs(config)
        self.swapped: list[str] = []

    staging = staticmethod(staged_beside)
    old = staticmethod(kept_beside)

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
            try:
                tar = commands.start(["tar", "-C", str(staging), "-xf", "-"], what=f"unpacking {entry.file}",
                                     stdin=source.stdout, stderr=commands.PIPE)
            except BaseException:
                source.kill()  # tar did not start: nothing reads the decompressor's output
                raise
            finally:
                source.stdout.close()  # tar holds the pipe now
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
            if target.exists():  # in one step: the server never finds the directory missing
                exchange(staging, target)
                os.rename(staging, old)
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
                    exchange(old, target)  # the old is back; the new now sits at the old's name
                    os.rename(old, self.staging(target))
                else:
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
        counts = health.catalog_counts(config.local_url, timeout=15)
    except CrdsOpsError as err:
        return [str(err)]
    problems = []
    # a mirror must leave the server answering as itself, not as the source it copied
    if (counts.observatory, counts.kind) != (config.observatory, config.kind):
        problems.append(f"{config.local_url} answers as {counts.server}, not {config.name}")
    return problems + [f"{name} is {mine!r}, the backup has {theirs!r}"
                       for name, mine, theirs in counts.differences(manifest.counts)]


@dataclass
class Staged:
    """What ``stage_while_serving`` prepared: ready to swap in, nothing live changed yet."""

    engine: Engine
    support: SupportRestore
    safety: Path | None = None  # the safety backup of the old state, made after the swap (``keep_safely``)
    took: dict[str, float] = field(default_factory=dict)  # job -> seconds, for the one line that says so
    listed: object = None  # the quick check's listing of the staged trees, or the CrdsOpsError that refused it
    generation: str | None = None  # the catalog generation its swap writes (the warm server info is made for it)


class Staging:
    """The jobs of ``stage_while_serving`` and what they made."""

    def __init__(self, config: ServerConfig, backup: Path, manifest: Manifest, check_cache: bool,
                 replay: Callable[[str], None] | None = None):
        self.config, self.backup, self.manifest = config, backup, manifest
        self.replay = replay  # applied to the staging schema once the dump is loaded (point-in-time restore)
        self.engine, self.support = engine_for(config), SupportRestore(config)
        self.check_cache = check_cache
        self.generation = new_generation()  # decided now: the warm-up records it, the swap writes it
        self.staged = {"support": threading.Event(), "database": threading.Event()}
        self.listed = None  # the quick check's listing of the staged trees, or the CrdsOpsError that refused it

    def jobs(self) -> dict[str, Callable[[], object]]:
        jobs = {"database staged": self._stage_db, "support staged": self._stage_support}
        if self.check_cache:
            jobs["cache listed"] = self._list_staged
        return jobs

    def _stage_db(self) -> None:
        config, engine = self.config, self.engine
        warmer = ServerInfoWarmer(config, engine, self.generation)  # Django starts while the rows load
        try:
            dump = self.backup / self.manifest.database.file
            if converts(config, self.manifest):  # a mirror from MySQL: Django's schema for SQLite, then the rows
                engine.stage_from_mysql(dump, lambda path: _migrate_into(config, path))
            elif self.replay is not None:  # the rows change after the load: the warm-up waits for the replay
                engine.stage(dump)
                self.replay(str(engine.staging))
            else:  # the warm-up reads the catalog's rows while the loader builds their keys and the rest
                engine.stage(dump, rows_loaded=lambda table: table == CATALOG_TABLE and warmer.go())
            self.staged["database"].set()
            warmer.finish()
        finally:
            warmer.abandon()

    def _stage_support(self) -> None:
        self.support.stage(self.backup, self.manifest)
        self.staged["support"].set()

    def _list_staged(self) -> None:
        """The quick cache check's listing of the cache and the staged mappings, while the rows load.

        Kept, not raised (the listing, or the CrdsOpsError that refused it): it never stops the restore.
        The comparison with the catalog runs once the new state serves (the staged state is live then)."""
        from crdsops.data import cachecheck

        try:
            if not self._ready("support"):
                return
            self.listed = cachecheck.list_trees(self.config, self.support.staging(self.support.targets["mappings"]))
        except CrdsOpsError as err:
            self.listed = err

    def _ready(self, part: str) -> bool:
        """Wait until ``part`` is staged; False when the staging is being stopped."""
        while not self.staged[part].wait(0.1):
            if interrupts.cancelled.is_set():
                return False
        return True

    def discard(self) -> list[str]:
        return discard_staged(self.config, self.engine, self.support)


def stage_while_serving(config: ServerConfig, backup: Path, manifest: Manifest, what: str = "",
                        check_cache: bool = False, alongside: dict[str, Callable[[], object]] | None = None,
                        replay: Callable[[str], None] | None = None) -> Staged:
    """Phase 1 (module docstring); ``alongside``: more jobs run side by side (a mirror's cache sync).

    The jobs ``alongside`` keep their own results; if any job fails or the task is interrupted,
    all stop, the staging is removed, and the error says nothing changed.
    """
    staging = Staging(config, backup, manifest, check_cache, replay)
    try:
        outcome = side_by_side({**staging.jobs(), **(alongside or {})})
    except BaseException as err:
        with interrupts.shielded():
            left = staging.discard()
        if isinstance(err, JobsFailed):
            also = f"; could not remove {', '.join(left)}: remove it by hand" if left else ""
            raise CrdsOpsError(f"{what or 'restore of ' + config.name} stopped before the swap ({err}); "
                               f"nothing was changed, the server state is as it was{also}") from None
        raise
    failpoints.hit("restore.staging_ended")  # past this try: discarded_unless_swapped removes the staging
    took = dict(outcome.seconds)
    log.info(f"staged: {', '.join(f'{k} in {v:.1f}s' for k, v in took.items())}")
    return Staged(staging.engine, staging.support, None, took, staging.listed, staging.generation)


def discard_staged(config: ServerConfig, engine: Engine, support: SupportRestore) -> list[str]:
    """Remove every staged part, each whatever the others raised; what could not be removed."""
    return cleanup.every({
        "the staged database": engine.discard_staging,
        "the staged support directories": support.discard_staging,
        "the precomputed server info": lambda: _drop_warm(config),
    })


@contextlib.contextmanager
def discarded_unless_swapped(config: ServerConfig, swapped: Callable[[], bool]):
    """Around a restore's or a mirror's steps: a failure or an interrupt before ``swapped()``
    removes whatever is staged under ``config``'s staging names.

    ``stage_while_serving`` and ``swap_and_check`` each remove the staging on their own failures;
    this covers the moments between them (a signal just after the staging jobs ended, or between
    the two steps), where no one else would. Removing is idempotent: after their own clean-up it
    finds nothing.
    """
    try:
        yield
    except BaseException:
        if not swapped():
            with interrupts.shielded():
                left = discard_staged(config, engine_for(config), SupportRestore(config))
            if left:
                log.warning(f"could not remove {', '.join(left)}: remove it by hand")
        raise


def _drop_warm(config: ServerConfig) -> None:
    """The precomputed server info, and the temporary file of a warm_server_info stopped mid-write
    (a signal ends it before its own clean-up could run)."""
    warm = config.layout.server_info_warm
    warm.unlink(missing_ok=True)
    for tmp in warm.parent.glob(f"{warm.name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def new_generation() -> str:
    """A catalog generation no earlier swap wrote (``Layout.catalog_generation``)."""
    return f"{time.time_ns()}-{os.getpid()}"


def write_generation(config: ServerConfig, generation: str | None = None) -> None:
    """A new catalog generation: each server process drops what it cached of the catalog on its next request."""
    write_atomic(config.layout.catalog_generation, f"{generation or new_generation()}\n", mode=0o644)


CATALOG_TABLE = "catalog_catalogfile"  # the one table download_metadata reads


class ServerInfoWarmer:
    """Precompute get_server_info's download_metadata from the staged database, for each server process's
    first request after the swap (made for the catalog generation the swap writes: the server checks it,
    the swap's age and the highest id before it uses it; server/crds_server/catalog/warm.py); never fatal.

    ``manage.py warm_server_info --when-told`` starts with the staging (Django's start, 0.7 s,
    overlaps the load) and computes when ``finish`` tells it the database is staged.
    """

    def __init__(self, config: ServerConfig, engine: Engine, generation: str):
        self.out = config.layout.server_info_warm
        self.args = ("warm_server_info", "--when-told", "--out", str(self.out), "--generation", generation)
        self.error = ""
        self.told = False  # "go" sent
        self.proc = None
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.proc = start_manage(config, *self.args, extra_env={"CRDS_DB_NAME": str(engine.staging)})
        except (OSError, CrdsOpsError) as err:
            self.error = str(err)

    def go(self) -> None:
        """Compute now (the rows it reads are staged); once, never fatal."""
        if self.proc is not None and not self.told:
            self.told = True
            try:
                self.proc.stdin.write("go\n")
                self.proc.stdin.flush()
            except OSError as err:  # it ended already: finish() says why
                log.debug(f"the warm-up did not take 'go' ({err})")

    def finish(self) -> bool:
        """Wait for its payload (telling it to compute if ``go`` was not called); False if it failed."""
        if self.proc is not None:
            self.go()
            out, err = self.proc.communicate()
            if self.proc.returncode == 0:
                return True
            self.error = manage_failure(self.args, self.proc.returncode, err or out)
        log.warning(f"could not precompute server info from the staged database ({self.error}); "
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


# --- phase 2: the swap ----------------------------------------------------------------------

DRAIN = 0.2  # seconds, after the hold appears: requests already past it finish against the old state


@dataclass
class Held:
    """How long the server held requests (``held``)."""

    seconds: float = 0.0


@contextlib.contextmanager
def held(config: ServerConfig, generation: str | None = None):
    """Hold the server's new requests for the block, then let them go into the new state.

    The server's middleware waits while ``Layout.hold`` exists (at most ``web.hold_timeout``;
    an older file is stale and holds nothing). Afterwards ``Layout.catalog_generation`` is
    rewritten (``generation``, or a new one) before the hold goes, so the first released request
    already drops what its process cached of the old catalog. Interrupts wait for the end of the block: a swap is
    never left half done, and the rollback that follows is held the same way.
    """
    layout, took = config.layout, Held()
    started = time.monotonic()
    with interrupts.shielded("the swap (requests held)"):
        write_atomic(layout.hold, f"{os.getpid()} {time.time_ns()}\n", mode=0o644)
        try:
            time.sleep(DRAIN)
            failpoints.hit("swap.held")
            yield took
        finally:
            write_generation(config, generation)
            layout.hold.unlink(missing_ok=True)
            took.seconds = time.monotonic() - started


def swap_and_check(config: ServerConfig, staged: Staged, manifest: Manifest, what: str = "") -> float:
    """Swap the staged state in under the running server, health check against ``manifest``;
    return the seconds requests were held (a server that was down is started after the swap).

    On any failure or interrupt once something was swapped: the reverse swap, held the same
    way, and raise (CrdsOpsError saying so, or the interrupt). On success, ``keep_safely``: the
    safety backup of the old state, then the old state dropped.
    """
    what = what or f"restore of {config.name}"
    swap = None
    try:
        swap = _Swap(config, staged)
        swap.swap_in_and_check(manifest)
    except BaseException as err:
        reason = interrupts.describe(err)
        log.info(f"{what} failed ({reason})")
        # nothing swapped yet (stopped while _Swap looked at the server): the caller's
        # discarded_unless_swapped removes the staging, as for any stop before the swap
        if swap is not None:
            with interrupts.shielded("the rollback"):
                swap.roll_back()
        if isinstance(err, KeyboardInterrupt):
            raise
        raise CrdsOpsError(f"{what} failed ({reason}); rolled back to the state before") from None
    held = f"kept serving: requests were held for {swap.held:.2f}s during the swap; " if swap.was_running else ""
    log.info(f"{config.name} {held}the new state serves, healthy")
    # the warm file stays (the generation, the swap's age and the highest id guard it): each server
    # process reads it on its first get_server_info after the swap
    keep_safely(config, staged, what)
    return swap.held


def keep_safely(config: ServerConfig, staged: Staged, what: str) -> None:
    """Phase 3 (module docstring): the safety backup of the old state the swap kept, then drop it.

    Sets ``staged.safety``. A failure warns (``taskrun.alert``: the line, the audit, a notification)
    and keeps the old state; an interrupt keeps it too, says so, and goes on as an interrupt.
    """
    engine, support = staged.engine, staged.support
    try:
        with under_way("the safety backup of the state before"):
            failpoints.hit("restore.safety")
            staged.safety = create(config, purpose="safety", publish=False, retention=False, kept_old=True)
    except BaseException as err:
        with interrupts.shielded("keeping the old state"):
            left = cleanup.every({"the emptied staging database": engine.discard_staging,
                                  "the staged support directories": support.discard_staging})
        also = f"; could not remove {', '.join(left)}: remove it by hand" if left else ""
        where, drop = kept_old_where(config, engine, support)
        taskrun.alert(f"warning: the safety backup of the state before the {what} failed "
                      f"({interrupts.describe(err)}); the {what} itself is done and the new state serves. "
                      f"The old state is kept: {where}; back it up if you need it, then drop it with {drop} "
                      f"(the next restore or mirror drops it){also}")
        if not isinstance(err, Exception):
            raise
        return
    with interrupts.shielded("dropping the old state"):  # backed up: never leave half of the old
        engine.discard_old()
        support.discard_old()
    log.info(f"safety backup {staged.safety}: the state before, made from the old state kept by the swap; "
             "verified, the old state dropped")


def kept_old_where(config: ServerConfig, engine: Engine, support: SupportRestore) -> tuple[str, str]:
    """(where a swap's old state is kept, how to drop it by hand), for the lines that leave it in place."""
    if config.database.is_mysql:
        db, drop = f"the schema `{engine.old}`", f"DROP DATABASE `{engine.old}`; (`inv manage -- dbshell`)"
    else:
        db, drop = str(engine.old), f"rm {engine.old}"
    dirs = [str(support.old(t)) for t in support.targets.values() if support.old(t).exists()]
    if dirs:
        drop += f" and rm -r {' '.join(dirs)}"
    return db + "".join(f", {d}" for d in dirs), drop


def swap_text(config: ServerConfig, running: bool, checks: str) -> str:
    """The plan's line for ``swap_and_check``: what clients see, and what is checked."""
    how = (f"while {config.name} serves, its requests held (not refused) for the moment of the swap, at most "
           f"web.hold_timeout {config.web.hold_timeout}s: " if running else f"{config.name} is not running: ")
    start = "" if running else "; start it"
    return (f"{how}swap the database (one atomic rename) and the support directories in, the old ones kept"
            f"{start}; health check at {config.local_url}: {checks}; "
            "if anything fails, the reverse swap, held the same way; once the new state serves, the safety "
            f"backup of the old state into {config.backups.private_dir}, then the old state dropped "
            "(kept, with a warning, if that backup fails)")


class _Swap:
    """The swap of one staged state, and its rollback."""

    def __init__(self, config: ServerConfig, staged: Staged):
        self.config, self.staged = config, staged
        self.swapped = {"db": False, "support": False}
        self.was_running = service.running_pid(config) is not None
        self.held = 0.0

    def swap_in_and_check(self, manifest: Manifest) -> None:
        config = self.config
        failpoints.hit("restore.staged")
        with under_way("swapping the new state in" + (" (requests held)" if self.was_running else "")):
            self._maybe_held(self._swap_in, self.staged.generation)
        if not self.was_running:
            with under_way("starting the server"):
                service.start(config)
        with under_way("the health check"):
            problems = health_check(config, manifest)
            if problems:
                raise CrdsOpsError("health check failed: " + "; ".join(problems))

    def _swap_in(self) -> None:
        self.staged.engine.swap_in()
        self.swapped["db"] = True
        self.staged.support.swap_in()
        self.swapped["support"] = True
        failpoints.hit("restore.swapped")

    def _maybe_held(self, swap: Callable[[], None], generation: str | None = None) -> None:
        """Run ``swap`` with the server's requests held if it serves, else as it is; then a new catalog
        generation (``generation``: the one the warm server info was made for)."""
        if service.running_pid(self.config) is None:
            swap()
            write_generation(self.config, generation)
            return
        with held(self.config, generation) as took:
            swap()
        self.held += took.seconds

    def roll_back(self) -> None:
        config = self.config
        log.info(f"rolling back {config.name} to the state before ...")
        config.layout.server_info_warm.unlink(missing_ok=True)  # it describes the new state, not the old
        failpoints.hit("restore.rollback")
        if not self.was_running:  # started for the health check: down again, as it was
            try:
                service.stop(config)
            except CrdsOpsError as err:
                log.warning(f"could not stop {config.name} for the rollback ({err})")
        try:
            self._maybe_held(self._put_old_back)
        finally:
            self._running_as_before()

    def _put_old_back(self) -> None:
        engine, support = self.staged.engine, self.staged.support
        try:
            if self.swapped["support"]:
                support.swap_back()
            if self.swapped["db"]:
                engine.swap_back()
            support.discard_staging()
            engine.discard_staging()
        except Exception as err:  # noqa: BLE001 - the old state was kept by the swap: say where it is
            where, _ = kept_old_where(self.config, engine, support)
            raise CrdsOpsError(f"swapping the old state back failed ({err}); the state before is kept, "
                               f"unchanged: {where}; put it back by hand, or `inv restore` a backup") from None

    def _running_as_before(self) -> None:
        config = self.config
        if not self.was_running:
            log.info(f"{config.name} has its previous state again (not started: it was not running before)")
            return
        if service.running_pid(config) is not None:
            log.info(f"{config.name} serves its previous state again")
            return
        try:  # it died under the new state: the old one needs a start
            service.start(config)
            log.info(f"{config.name} runs its previous state again")
        except CrdsOpsError as err:
            log.error(f"could not start {config.name} after the rollback ({err}); start it with `inv run`")
