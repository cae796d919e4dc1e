"""``inv upgrade`` and ``inv rollback``: another release of the server's code, preflighted while
the serving one serves, switched in with the zero-refusal reload, and switched back by itself.

    upgrade:  [adopt the checkout's code as the first release] -> make the release (git archive)
              -> its stack (shared when the lock is unchanged, else built) -> preflight (import,
              check --deploy, migrate --plan) -> migrate -> smoke test -> switch ``current`` ->
              reload -> probe with the real client until the new release answers -> prune
    rollback: the previous (or a named) release -> refused when the database holds a migration
              that release does not know -> preflight (no migration) -> switch -> reload -> probe

The live database is migrated before the smoke test, not after: a release that adds a column
and reads it would fail a smoke test against the old schema. Only additive migrations run
without ``--allow-destructive``, so the serving release keeps working on the migrated database.

Anything that fails or is interrupted before the switch leaves the old release serving and
removes the new one; after the switch, ``current`` is switched back and the server reloaded
(shielded from a second Ctrl-C), and the error line says what failed and what serves.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from crdsops import failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import write_atomic
from crdsops.runtime import preflight, releases, selftest, service
from crdsops.runtime.backends import backend_for
from crdsops.runtime.environ import manage, render_env_csh, render_env_sh, stack_python
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import ReleaseOutcome
from crdsops.runtime.releases import Release
from crdsops.steps import Plan

log = logging.getLogger(__name__)

# Prints which release answers get_server_info, asked through the real crds client.
RELEASE_SCRIPT = ("import json, crds.client.api as api; "
                  "print(json.dumps(api.get_server_info().get('crdsops_release', '')))")


@dataclass(frozen=True)
class Target:
    """The release an upgrade makes (not yet on disk)."""

    sha: str
    ref: str
    subject: str
    lock_sha256: str
    stack: Path
    build_stack: bool


@dataclass(frozen=True)
class SwitchFacts:
    serving: Release | None  # None: the checkout serves (no release yet)
    pid: int | None  # the server's, None when it is down


class _Switching(Operation):
    """What upgrade and rollback share: the switch, the reload, the probe and the way back."""

    to: str | None = None

    def __init__(self, config: ServerConfig):
        super().__init__(config)
        self.before: Release | None = None  # what served when the run began
        self.serving: Release | None = None  # what serves now
        self.rolled_back = False

    def outcome(self) -> ReleaseOutcome:
        now, before = self.serving, self.before
        return ReleaseOutcome(now.name if now else "", before.name if before else "",
                              now.revision if now else "", switched=(now != before) and not self.rolled_back,
                              rolled_back=self.rolled_back)

    def run(self, plan: Plan) -> ReleaseOutcome:
        try:
            plan.run()
        except preflight.PreflightFailed as err:
            raise self.refused(self.to, err) from None
        return self.outcome()

    def refused(self, what: str, err: Exception) -> CrdsOpsError:
        serving = self.serving.name if self.serving else "the checkout's code"
        return CrdsOpsError(f"{what or 'the previous release'} refused at preflight: {err}; nothing was switched: "
                            f"{serving} serves")

    def _switch_steps(self, p: Plan, new: str, pid: int | None, name) -> None:
        """The switch to release NEW (its name is ``name()`` once it exists), the reload and the probe."""
        backend = backend_for(self.config)
        p.add(f"switch {self.config.layout.current} to releases/{new} (one atomic rename) and rewrite env.sh",
              lambda: self._switch(name()), name="switching current")
        if pid is None:
            p.add(f"{self.config.name} is not running: it runs {new} at the next `inv run`")
            return
        how = "reload (graceful)" if backend.graceful else "restart (a moment without answers)"
        p.add(f"{how}: {backend.reload_text(self.config)}; then ask the live server with the real crds client "
              f"until get_server_info says {new} (any failure: switch back and reload)",
              lambda: self._reload_and_probe(name(), pid), name="reloading onto the new release")

    def _switch(self, name: str) -> None:
        failpoints.hit("upgrade.switching")
        target = releases.find(self.config, name)
        with interrupts.shielded(f"switching {self.config.name} to {name}"):
            releases.switch(self.config, target)
            self.serving = target
            _write_env(self.config)
        log.info(f"current -> {name}")

    def _reload_and_probe(self, name: str, pid: int) -> None:
        try:
            failpoints.hit("upgrade.switched")
            service.reload(self.config, service.running_pid(self.config) or pid)
            failpoints.hit("upgrade.reloaded")
            probe_live(self.config, name)
        except BaseException as err:
            with interrupts.shielded(f"switching {self.config.name} back"):
                self._switch_back()
            if isinstance(err, CrdsOpsError):
                back = self.serving.name if self.serving else "the checkout's code"
                raise CrdsOpsError(f"{self.task} to {name} failed after the switch ({str(err).splitlines()[0]}); "
                                   f"switched back: {back} serves") from None
            raise

    def _switch_back(self) -> None:
        before = self.before
        if before is None:
            releases.unswitch(self.config)
        else:
            releases.switch(self.config, before)
        self.serving, self.rolled_back = before, True
        _write_env(self.config)
        pid = service.running_pid(self.config)
        try:
            if pid is None:
                service.start(self.config)
            else:
                service.reload(self.config, pid)
        except CrdsOpsError as err:
            log.error(f"switching back: {str(err).splitlines()[0]}; run `inv rerun`")


class Upgrade(_Switching):
    """``inv upgrade [--to REV]``."""

    task = "upgrade"

    def __init__(self, config: ServerConfig, to: str = "HEAD", allow_destructive: bool = False):
        super().__init__(config)
        self.to = to or "HEAD"
        self.allow_destructive = allow_destructive
        self.made: Release | None = None
        self.planned: list[preflight.Migration] = []

    def probe(self) -> tuple[SwitchFacts, Target]:
        config = self.config
        sha, subject = releases.resolve(config, self.to)
        lock = releases.lock_sha256_at(config, sha)
        stack, build = releases.stack_for(config, lock)
        facts = SwitchFacts(releases.current(config), service.running_pid(config))
        return facts, Target(sha, self.to, subject, lock, stack, build)

    def plan(self, facts) -> Plan:
        state, target = facts
        config = self.config
        self.before = self.serving = state.serving
        p = Plan(f"upgrading {config.name} to {target.sha[:7]} ({target.subject})")
        p.confirm = f"upgrade {config.name} to {target.sha[:7]} ({target.subject})?"
        if state.serving is None:
            p.add(f"adopt the code serving now (the checkout's server/) as the first release under "
                  f"{config.layout.releases} (copied; nothing stops)", self._adopt, name="adopting the running code")
        elif state.serving.revision == target.sha:
            p.problems.append(f"{state.serving.name} serves {target.sha[:7]} already; nothing to upgrade "
                      "(`inv rerun` reloads the same release)")
        p.add(f"make the release <time>-{target.sha[:7]} under {config.layout.releases}: git archive "
              f"{target.sha[:7]} of {releases.repository(config)}",
              lambda: self._make(target), name="making the release")
        if target.build_stack:
            p.add(f"build its stack in {target.stack} (its conda-lock.yml differs: sha256 {target.lock_sha256[:12]})",
                  lambda: releases.build_stack(config, self.made), name="building its stack")
        else:
            p.add(f"share the stack {target.stack} (conda-lock.yml unchanged: sha256 {target.lock_sha256[:12]})")
        p.add("preflight it while the old release serves: import the WSGI application, manage.py check --deploy "
              "(errors refuse), migrate --plan against the live database (dropping, altering or renaming what "
              f"exists refuses{' : allowed by --allow-destructive' if self.allow_destructive else ''})",
              self._preflight, name="preflighting the release")
        p.add("migrate the live database with its migrations (additive: the serving release keeps working)",
              self._migrate, name="migrating the database")
        p.add("smoke-test it on a loopback port against the live database read-only with the real crds client "
              "(get_server_info, crds sync of the operational context, best references of one dataset)",
              lambda: self._in_release(lambda: preflight.smoke(config)), name="smoke-testing the release")
        self._switch_steps(p, f"<time>-{target.sha[:7]}", state.pid, lambda: self.made.name)
        p.add(f"keep the newest {config.upgrade.keep} releases", self._prune, name="pruning releases")
        return p

    def run(self, plan: Plan) -> ReleaseOutcome:
        try:
            return super().run(plan)
        except BaseException:
            with interrupts.shielded(f"removing the release that did not go live on {self.config.name}"):
                if self.made is not None and self.serving != self.made:
                    releases.remove(self.config, self.made)
            raise

    def _adopt(self) -> None:
        adopted = releases.adopt(self.config)
        with interrupts.shielded("recording the first release"):
            releases.switch(self.config, adopted)
            self.before = self.serving = adopted
            _write_env(self.config)
        log.info(f"adopted the running code as {adopted.describe()}")

    def _make(self, target: Target) -> None:
        self.made = releases.make(self.config, target.sha, target.ref, target.subject, target.lock_sha256,
                                  target.stack)
        log.info(f"made {self.made.describe()}")

    def _in_release(self, work):
        with releases.trying(self.made.code(self.config)):
            return work()

    def _preflight(self) -> None:
        self.planned = self._in_release(lambda: preflight.static_checks(self.config))
        preflight.refuse_destructive(self.planned, self.allow_destructive)

    def _migrate(self) -> None:
        if not self.planned:
            log.info("no migration to apply")
            return
        self._in_release(lambda: manage(self.config, "migrate", "--noinput", capture=True))

    def _prune(self) -> None:
        protect = tuple(r.name for r in (self.serving, self.before) if r is not None)
        removed = releases.prune(self.config, self.config.upgrade.keep, protect)
        if removed:
            log.info(f"removed {len(removed)} old releases: {', '.join(removed)}")


class Rollback(_Switching):
    """``inv rollback [--to RELEASE]``: the previous (or named) release."""

    task = "rollback"

    def __init__(self, config: ServerConfig, to: str | None = None):
        super().__init__(config)
        self.to = to

    def probe(self) -> tuple[SwitchFacts, Release, list[str]]:
        config = self.config
        serving = releases.current(config)
        if serving is None:
            raise CrdsOpsError(f"{config.name} has no releases yet (the checkout's code serves); "
                               "`inv upgrade` makes the first")
        target = releases.find(config, self.to) if self.to else _previous(config, serving)
        return SwitchFacts(serving, service.running_pid(config)), target, _unknown_migrations(config, target)

    def plan(self, facts) -> Plan:
        state, target, unknown = facts
        self.before = self.serving = state.serving
        p = Plan(f"rolling {self.config.name} back from {state.serving.name} to {target.describe()}")
        p.confirm = f"roll {self.config.name} back to {target.name}?"
        if target == state.serving:
            p.problems.append(f"{target.name} serves already")
        if unknown:
            p.problems.append(f"the database holds migrations {target.name} does not know ({', '.join(unknown)}); "
                      "rolling back would need them reversed: restore a backup from before them instead")
        p.add("preflight it: import the WSGI application, manage.py check --deploy, and a smoke test on a "
              "loopback port against the live database read-only with the real crds client",
              lambda: _preflight_existing(self.config, target), name="preflighting the release")
        self._switch_steps(p, target.name, state.pid, lambda: target.name)
        return p


def _previous(config: ServerConfig, serving: Release) -> Release:
    older = [r for r in releases.all_releases(config) if r.name < serving.name]
    if not older:
        raise CrdsOpsError(f"no release before {serving.name} is kept; `inv releases` lists them")
    return older[-1]


def _unknown_migrations(config: ServerConfig, target: Release) -> list[str]:
    """Migrations applied to the database that ``target``'s code does not have."""
    applied = _migrations(config, applied_only=True)
    with releases.trying(target.code(config)):
        known = _migrations(config, applied_only=False)
    return sorted(applied - known)


def _migrations(config: ServerConfig, applied_only: bool) -> set[str]:
    result = manage(config, "showmigrations", "--list", capture=True, check=False)
    if not result.ok:
        raise CrdsOpsError(f"manage.py showmigrations failed: {result.last_error_line()}")
    found, app = set(), ""
    for line in result.stdout.splitlines():
        if line and not line.startswith(" "):
            app = line.strip()
        elif line.strip().startswith("[") and app:
            mark, _, name = line.strip().partition("] ")
            if not applied_only or "X" in mark:
                found.add(f"{app}.{name.strip()}")
    return found


def _preflight_existing(config: ServerConfig, target: Release) -> None:
    with releases.trying(target.code(config)):
        preflight.static_checks(config)
        preflight.smoke(config)


def _write_env(config: ServerConfig) -> None:
    layout = config.layout
    write_atomic(layout.env_sh, render_env_sh(config), mode=0o644)
    write_atomic(layout.env_csh, render_env_csh(config), mode=0o644)


def probe_live(config: ServerConfig, name: str, timeout: float | None = None) -> None:
    """Ask the live server with the real crds client until get_server_info names release ``name``."""
    timeout = timeout or max(10.0, float(config.web.start_timeout))
    client = selftest.Client(str(stack_python(config)), config.local_url, str(config.layout.run / "probe"))
    deadline, said = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        result = client.run("-c", RELEASE_SCRIPT, timeout=60)
        said = json.loads(result.stdout.strip().splitlines()[-1]) if result.ok else result.last_error_line()
        if said == name:
            log.info(f"the live server answers the real crds client as {name}")
            return
        time.sleep(0.2)
    raise CrdsOpsError(f"the live server does not answer as {name} within {timeout:.0f}s (it says {said!r})")
