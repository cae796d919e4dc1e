"""Tasks for one server's life cycle: config, install, run, stop, rerun, status, history, manage, runtests,
maintenance.

Defaults: none of these need flags once `inv install --obs OBS --kind KIND` has recorded
which server this checkout runs (``var/installed.json``, or ``CRDSOPS_STATE``). Configs are
read from ``configs/`` (or ``CRDSOPS_CONFIGS``).
"""

from __future__ import annotations

import json
import sys

from invoke import Exit

from crdsops.tasks._common import ops_task, say, server

JSON_HELP = "print JSON (a document with a `schema` version; see README, JSON output)"


@ops_task(help={
    "obs": "observatory (hst, jwst, ...); default: the installed server's",
    "kind": "server kind (django, dev, test, ops, dit, bit, cit, ait); default: the installed server's",
    "json": "print JSON instead of YAML",
})
def config(c, obs=None, kind=None, json_=False):
    """Print the resolved, validated config of a server."""
    cfg = server(obs, kind)
    data = cfg.as_dict()
    if json_:
        print(json.dumps(data, indent=2))
        return
    import yaml

    print(f"# {cfg.name}, from {', '.join(cfg.sources)}")
    print(yaml.safe_dump(data, sort_keys=False).rstrip())


@ops_task(help={
    "obs": "observatory to install: hst, jwst (the configs/ directories)",
    "kind": "server kind: django, dev, test, ops, or a JWST I&T kind (dit, bit, cit, ait)",
    "if_none": "do nothing when a server is already installed here (used by `make run`)",
    "dry_run": "print the plan (its read-only checks run for real), change nothing",
})
def install(c, obs=None, kind=None, if_none=False, dry_run=False):
    """Install a server: directories, env.sh/env.csh, database migrations, static files."""
    from crdsops.config import installed as identity
    from crdsops.runtime.install import Install
    from crdsops.runtime.lifecycle import drive

    installed = identity.read_installed()
    if (obs is None or kind is None) and installed is None:
        raise Exit("error: give --obs and --kind (e.g. `inv install --obs hst --kind django`)")
    cfg = server(None, None) if if_none and installed is not None else server(obs, kind)
    drive(Install(cfg, if_none=if_none), dry_run=dry_run)


@ops_task(help={"foreground": "run in this terminal (development); stop with Ctrl-C"})
def run(c, foreground=False):
    """Start the installed server in the background; return once it answers."""
    from crdsops.runtime import service
    from crdsops.runtime.lifecycle import drive
    from crdsops.runtime.serving import Start

    cfg = server()
    if foreground:
        raise Exit(code=service.foreground(cfg))
    drive(Start(cfg))


@ops_task
def stop(c):
    """Stop the installed server: gracefully, then forcefully after web.stop_timeout."""
    from crdsops.runtime.lifecycle import drive
    from crdsops.runtime.serving import Stop

    drive(Stop(server()))


@ops_task(help={"dry_run": "print the plan (its read-only checks run for real), change nothing"})
def rerun(c, dry_run=False):
    """Stop, reinstall (same identity) and start the installed server."""
    from crdsops.runtime.lifecycle import drive
    from crdsops.runtime.serving import Rerun

    drive(Rerun(server()), dry_run=dry_run)


@ops_task(positional=["action"], help={
    "action": "on, off, or status (show the notice in force)",
    "message": "on: what clients are told (printable ASCII, one line); default: a generic notice",
    "retry_after": "on: the seconds clients are told to wait before retrying (Retry-After; default 300)",
    "json": "status: print the notice as JSON (null when off)",
})
def maintenance(c, action, message=None, retry_after=None, json_=False):
    """Turn maintenance mode on or off: JSON-RPC answers 503 with a message; files still download."""
    from crdsops.runtime import maintenance as mode
    from crdsops.runtime.lifecycle import drive

    cfg = server()
    if action == "status":
        current = mode.read(cfg.layout)
        if json_:
            print(json.dumps(current.as_dict() if current else None, indent=2))
        else:
            print(f"maintenance: {current.describe() if current else 'off'}")
        return
    if action not in ("on", "off"):
        raise Exit(f"error: `inv maintenance {action}`: say on, off or status")
    if action == "off" and (message is not None or retry_after is not None):
        raise Exit("error: --message and --retry-after go with `inv maintenance on`")
    drive(mode.Maintenance(cfg, mode.notice(message, retry_after) if action == "on" else None))


@ops_task(help={"json": JSON_HELP})
def status(c, json_=False):
    """Say whether the server is up, its context, backups and last checks; exit 1 down, 2 warning."""
    from crdsops.data import state

    cfg = server()
    rep = state.report(cfg)
    if json_:
        print(json.dumps(rep.as_dict(), indent=2, default=str))
    else:
        print(rep.text())
    if rep.exit_code:
        raise Exit(code=rep.exit_code)


@ops_task
def metrics(c):
    """Print the server's Prometheus metrics (node_exporter textfile format), as every task's end writes them."""
    from crdsops.data import metrics as prom
    from crdsops.data import state

    print(prom.text(state.report(server())), end="")


@ops_task(help={
    "n": "how many entries to show, newest last (default 20; 0 for all)",
    "task": "only the runs of this task (backup, restore, mirror, stop, ...)",
    "json": JSON_HELP,
})
def history(c, n=20, task=None, json_=False):
    """Show the audit log: who ran which changing task on this server, when, and how it ended."""
    from crdsops.data.state import from_what
    from crdsops.runtime import audit
    from crdsops.timefmt import age_text

    cfg = server()
    n = int(n)
    entries = audit.history(cfg.layout, limit=n or None, task=task)
    if json_:
        print(json.dumps({"schema": audit.SCHEMA, "server": cfg.name, "log": str(cfg.layout.audit_log),
                          "entries": [e.as_dict() for e in entries]}, indent=2, default=str))
        return
    if not entries:
        which = f" of `{task}`" if task else ""
        print(f"no runs{which} in {cfg.layout.audit_log} yet")
        return
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    print(f"{'when (UTC)':20} {'ago':>8} {'task':9} {'result':11} {'took':>7}  who / what")
    for e in entries:
        when = e.when.strftime("%Y-%m-%d %H:%M:%S") if e.when else e.at
        ago = age_text(now - e.when) if e.when else "?"
        flags = " ".join(f"--{k}" if v is True else f"--{k}={v}" for k, v in e.flags.items())
        what = from_what(e)
        detail = "; ".join(x for x in (e.who.describe(), flags, what, e.error or "") if x)
        print(f"{when:20} {ago:>8} {e.task:9} {e.result:11} {e.seconds:6.1f}s  {detail}")
        for warning in e.warnings:
            print(f"{'':60}warning: {warning}")


@ops_task(help={"args": "manage.py arguments as one string; or put them after `--`"})
def manage(c, args=""):
    """Run any manage.py command in the server's environment: `inv manage -- shell`."""
    import shlex

    from crdsops.runtime.environ import manage as run_manage

    cfg = server()
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else shlex.split(args)
    if not argv:
        raise Exit("error: say which manage.py command to run, e.g. `inv manage -- shell`")
    result = run_manage(cfg, *argv, check=False)
    if result.returncode:
        raise Exit(code=result.returncode)


@ops_task(help={
    "django_only": "run only the server's Django test suite",
    "live_only": "run only the live checks against the running server",
})
def runtests(c, django_only=False, live_only=False):
    """Run the server's Django tests, then live checks through the real crds client."""
    from crdsops.runtime import selftest

    cfg = server()
    checks = selftest.run_recorded(cfg, django_only=bool(django_only), live_only=bool(live_only))
    say(f"runtests {cfg.name}: {checks.summary}")
    if checks.failed:
        raise Exit(code=1)
