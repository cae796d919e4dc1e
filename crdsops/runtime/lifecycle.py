"""One lifecycle for every changing task: probe -> Facts, plan -> Plan, run -> Outcome.

An ``Operation`` is one changing task on one server, given all its options when it is made
(a frozen record; nothing is set on it afterwards). ``drive(op)`` runs it, always in this order:

    check()          refusals that need no probe (before the lock: wrong flags, direction)
    lock             the server's lock (``crdsops.runtime.lock``), from the probe to the end
    resources()      what the operation holds from its probe to its end, let go whatever happens
                     (a mirror: its one SSH connection to the source)
    probe()  -> Facts     read-only, run for real also under --dry-run (a frozen record)
    plan(facts) -> Plan   the steps (``crdsops.steps.Plan``); shown; its problems refuse it
    --dry-run stops here; the plan's question is asked unless --yes
    run(plan) -> Outcome  the steps; the outcome (a ``crdsops.runtime.outcomes`` record) says
                          what it touched, also when it fails part-way (``outcome()``)
    recheck(outcome)      the closing check (restore and mirror end with the cache check), still locked

and tells the task's run (``crdsops.runtime.taskrun``) the server acted on, whose audit log
gets the line and the outcome, so that the audit line, the notifications and the interrupt
line all come from here. The interrupt rules are the operations' own ``finally`` blocks and
``interrupts.shielded``; the driver adds nothing between a step and its clean-up.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING

from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.runtime import taskrun
from crdsops.steps import Plan

if TYPE_CHECKING:  # annotations only: the outcomes' records cost an import every task would pay
    from crdsops.runtime.outcomes import Outcome

log = logging.getLogger(__name__)


class Refused(CrdsOpsError):
    """The probes found a reason not to run the plan; nothing was changed."""


class NotConfirmed(CrdsOpsError):
    """The operator did not say yes; nothing was changed."""


class Operation:
    """One changing task on ``config``'s server. Subclasses set ``task`` and define probe and plan."""

    task = ""  # its name in the audit log and the lock's holder record
    notifying = False  # pings and mails (monitoring:) when it starts and ends
    lock_before_probe = True  # False: the probes may refuse before the lock exists (a first install)
    quiet_plan = False  # True: the plan is said only under --dry-run (run, stop: its lines say it all)
    dry_run = False  # set by ``drive`` before the probe

    def __init__(self, config: ServerConfig | None):
        self.config = config

    @property
    def changing(self) -> bool:
        """Whether a real run of it changes its server (and leaves an audit line)."""
        return True

    @property
    def audit_in(self) -> ServerConfig | None:
        """Whose audit log gets the line (``inv build`` acts on no server but logs into the installed one's)."""
        return self.config

    @property
    def locks(self) -> ServerConfig | None:
        """Whose lock it holds (None: none)."""
        return self.config

    def check(self) -> None:
        """Refusals that need no probe and no lock."""

    def resources(self) -> contextlib.AbstractContextManager:
        """A context around the probe, the steps and the closing check, left also on an error or an
        interrupt (before the lock is released): what the probes open and the steps share (a mirror's
        SSH connection)."""
        return contextlib.nullcontext()

    def probe(self) -> object:
        raise NotImplementedError

    def plan(self, facts) -> Plan:
        raise NotImplementedError

    def run(self, plan: Plan) -> Outcome | None:
        plan.run()
        return self.outcome()

    def outcome(self) -> Outcome | None:
        """What this run did, or what is known of it so far (after a failure or before any step)."""
        return None

    def confirm(self, plan: Plan, yes: bool) -> None:
        """Ask the plan's question unless ``yes``; NotConfirmed when the answer is not yes."""
        if plan.confirm and not confirm(plan.confirm, yes):
            raise NotConfirmed("not confirmed; nothing was changed (use --yes when running without a terminal)")

    def recheck(self, outcome: Outcome | None) -> None:
        """After a successful run: the closing check (never fatal unless it says so)."""


def drive(op: Operation, dry_run: bool = False, yes: bool = False) -> Outcome | None:
    """Run ``op`` through its lifecycle (module docstring); return its outcome (None for a dry run)."""
    run = taskrun.current()
    if run is not None:
        real = not dry_run and op.changing
        run.acting_on(op.config, audit_in=op.audit_in if real else None, notifying=op.notifying and not dry_run)
    op.dry_run = dry_run  # a probe may skip work only a dry run's plan shows (a restore's event count)
    try:
        op.check()
        with _locked(op, hold=op.lock_before_probe and not dry_run), op.resources():
            facts = op.probe()
            plan = op.plan(facts)
            if dry_run or not op.quiet_plan:
                plan.show()
            if plan.problems:
                raise Refused(plan.refused())
            if dry_run:
                log.info("dry run: nothing changed")
                return None
            op.confirm(plan, yes)
            with _locked(op, hold=not op.lock_before_probe):
                outcome = op.run(plan)
                op.recheck(outcome)
        return outcome
    finally:
        if run is not None:
            run.outcome = op.outcome()


@contextlib.contextmanager
def _locked(op: Operation, hold: bool):
    """Hold ``op``'s server lock for the block (re-entrant: an inner hold of the same lock is free)."""
    if not hold or op.locks is None:
        yield
        return
    from crdsops.runtime.lock import server_lock

    with server_lock(op.locks, op.task):
        yield


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask before a destructive step; no answer (no terminal, EOF) means no."""
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
