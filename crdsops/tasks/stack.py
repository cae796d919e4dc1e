"""Tasks for the server's Python stack: `lock` (conda-lock) and `build` (alias build-conda3).

Defaults: the lock is `conda-lock.yml`, made from `environment.yml`, `environment-dev.yml`
and `environment-vm.yml` in the checkout; the stack prefix is `stack.prefix` of the installed
server's config (`crdsops.config.installed.stack_prefix()`, `.venv` by default); `build` keeps the
categories the current stack has (main, plus dev and/or vm) unless --dev/--no-dev or
--vm/--no-vm say otherwise (vm: mysqlclient and mod_wsgi, what the VM kinds need),
and picks its mode from the lock and the machine (conda where a conda executable and a
conda-channel lock exist, else the system Python). `lock` uses the environment's channels
unless --channel (or CRDSOPS_CONDA_CHANNEL) overrides them; with no conda executable it
drives conda-lock through a py-rattler front end and, with no channel either, solves the
conda layer against a local channel describing /usr/bin/python3.

Module level imports invoke and the stdlib only: `inv --list` stays fast.
"""

from __future__ import annotations

import pathlib

from crdsops.tasks._common import ops_task


def _prefix(prefix):
    if prefix is not None:
        return pathlib.Path(prefix)
    from crdsops.config.installed import stack_prefix

    return stack_prefix()


@ops_task(aliases=["build-conda3"], help={
    "prefix": "where the stack goes (default: the config's stack.prefix, .venv in the checkout)",
    "dev": "include the dev category (pytest, py-rattler, conda-lock); default: as the current stack",
    "no_dev": "leave the dev category out (default: as the current stack)",
    "vm": "include the vm category (mysqlclient, mod_wsgi: needed to install a VM kind; needs a compiler and apache2-dev)",
    "no_vm": "leave the vm category out (default: as the current stack)",
    "mode": "auto (default), conda (conda create from the lock, then its pip layer) or system (venv of the system Python + pip layer)",
    "python": "system Python for --mode system (default /usr/bin/python3; must match the lock's python)",
    "conda": "conda/mamba/micromamba executable for --mode conda (default: CRDSOPS_CONDA, then PATH)",
    "lock_file": "lock to build from (default: conda-lock.yml in the checkout)",
    "force": "rebuild even when the stack is up to date with the lock",
    "dry_run": "print the plan (lock freshness and interpreter checks run for real), change nothing",
})
def build(c, prefix=None, dev=False, no_dev=False, vm=False, no_vm=False, mode=None, python=None, conda=None, lock_file=None, force=False, dry_run=False):
    """Build the server stack from conda-lock.yml (a no-op when the lock is unchanged)."""
    from crdsops.runtime.lifecycle import drive
    from crdsops.stack import build as stack

    options = stack.BuildOptions(dev=_either("dev", dev, no_dev), vm=_either("vm", vm, no_vm), mode=mode,
                                 python=python, conda=conda, lock_path=pathlib.Path(lock_file) if lock_file else None,
                                 force=force)
    drive(_build_operation(_prefix(prefix), options), dry_run=dry_run)


def _either(name: str, yes: bool, no: bool) -> bool | None:
    """--NAME: True, --no-NAME: False, neither: None (as the current stack has it)."""
    if yes and no:
        from invoke import Exit

        raise Exit(f"error: give --{name} or --no-{name}, not both")
    return True if yes else (False if no else None)


def _build_operation(prefix: pathlib.Path, options):
    """``inv build`` in the one lifecycle (``crdsops.runtime.lifecycle``): probe the stack's facts, plan its
    one step (``crdsops.stack.build.steps``), no server lock (the builder holds its own per prefix), its
    audit line in the installed server's log (the stack is the checkout's).

    The class is made here, not at module level: the lifecycle's imports would slow `inv --list`, and the
    runtime layer may not import the stack builder.
    """
    from crdsops.config.installed import resolve_installed_or_none
    from crdsops.errors import CrdsOpsError
    from crdsops.runtime.lifecycle import Operation
    from crdsops.runtime.outcomes import BuildOutcome
    from crdsops.stack import build as stack

    class Build(Operation):
        task = "build"
        locks = None

        def __init__(self):
            super().__init__(None)
            self.facts = None  # the probe's StackFacts, once known: outcome() reads them
            try:
                self.log_to = resolve_installed_or_none()
            except CrdsOpsError:
                self.log_to = None

        @property
        def audit_in(self):
            return self.log_to

        def probe(self):
            self.facts = stack.probe(prefix, options)
            return self.facts

        def plan(self, facts):
            return stack.steps(facts)

        def outcome(self):
            return BuildOutcome(self.facts.prefix, self.facts.up_to_date) if self.facts else None

    return Build()


@ops_task(iterable=["channel", "env_file"], help={
    "channel": "conda channel replacing the environment's (repeatable; default: CRDSOPS_CONDA_CHANNEL, then environment.yml's)",
    "conda": "conda-compatible executable for conda-lock (default: CRDSOPS_CONDA, conda/mamba/micromamba on PATH, else the py-rattler front end)",
    "env_file": "environment file (repeatable; default: environment.yml, environment-dev.yml and environment-vm.yml)",
    "lock_file": "lock to write (default: conda-lock.yml in the checkout)",
    "python": "with no conda and no channel: the system Python the local channel describes (default /usr/bin/python3)",
    "timeout": "seconds before conda-lock is stopped (default 1800)",
})
def lock(c, channel=None, conda=None, env_file=None, lock_file=None, python=None, timeout=None):
    """Re-lock the stack: run conda-lock on environment.yml for linux-64 into conda-lock.yml."""
    from crdsops.stack import build as stack

    stack.lock(stack.LockOptions(
        env_files=tuple(pathlib.Path(e).resolve() for e in env_file or ()),
        lock_path=pathlib.Path(lock_file).resolve() if lock_file else None,
        channels=tuple(channel or ()),
        conda=conda,
        python=python,
        timeout=float(timeout) if timeout is not None else stack.LOCK_TIMEOUT,
    ))
