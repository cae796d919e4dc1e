"""Tasks for one server's life cycle: config, install, run, stop, rerun, status, manage, runtests.

Defaults: none of these need flags once `inv install --obs OBS --kind KIND` has recorded
which server this checkout runs (``var/installed.json``, or ``CRDSOPS_STATE``). Configs are
read from ``configs/`` (or ``CRDSOPS_CONFIGS``).
"""

from __future__ import annotations

import json
import sys

from invoke import Exit

from crdsops.tasks._common import installed_config, ops_task, server


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
    from crdsops.runtime import install as lib

    installed = identity.read_installed()
    if if_none and installed is not None:
        print(f"{installed.name} is already installed here; nothing to do")
        return
    if (obs is None or kind is None) and installed is None:
        raise Exit("error: give --obs and --kind (e.g. `inv install --obs hst --kind django`)")
    cfg = server(obs, kind)
    if dry_run:
        lib.plan(cfg).show()
        return
    lib.install(cfg)


@ops_task(help={"foreground": "run in this terminal (development); stop with Ctrl-C"})
def run(c, foreground=False):
    """Start the installed server in the background; return once it answers."""
    from crdsops.runtime import service
    from crdsops.runtime.backends import backend_for
    from crdsops.runtime.lock import server_lock

    cfg = installed_config()
    if foreground:
        backend = backend_for(cfg)
        if service.running_pid(cfg, backend) is not None:
            raise Exit(f"error: {cfg.name} is already running in the background; `inv stop` it first")
        service.check_port_free(cfg.web.host, cfg.web.port)
        raise Exit(code=backend.foreground(cfg))
    with server_lock(cfg, "run"), service.kept_as_it_was(cfg):
        service.start(cfg)


@ops_task
def stop(c):
    """Stop the installed server: gracefully, then forcefully after web.stop_timeout."""
    from crdsops.runtime import service
    from crdsops.runtime.lock import server_lock

    cfg = installed_config()
    with server_lock(cfg, "stop"), service.kept_as_it_was(cfg):
        service.stop(cfg)


@ops_task(help={"dry_run": "print the plan (its read-only checks run for real), change nothing"})
def rerun(c, dry_run=False):
    """Stop, reinstall (same identity) and start the installed server."""
    from crdsops.runtime import install as lib
    from crdsops.runtime import service
    from crdsops.runtime.lock import server_lock
    from crdsops.steps import Plan

    cfg = installed_config()
    pid = service.running_pid(cfg)
    plan = Plan(f"rerunning {cfg.name}")
    plan.add(f"stop it (pid {pid})" if pid else "nothing to stop (not running)", lambda: service.stop(cfg),
             name="stopping the server")
    plan.steps += lib.plan(cfg).steps
    plan.add(f"start it at {cfg.local_url} and wait until get_server_info answers", lambda: service.start(cfg),
             name="starting the server")
    if dry_run:
        plan.show()
        return
    with server_lock(cfg, "rerun"), service.kept_as_it_was(cfg):
        plan.run()


@ops_task(help={"json": "print the status as JSON"})
def status(c, json_=False):
    """Say which server this is, whether it runs and answers; exit 1 when it is down."""
    from dataclasses import asdict

    from crdsops.runtime import service

    cfg = installed_config()
    st = service.status(cfg)
    if json_:
        print(json.dumps(asdict(st) | {"up": st.up}, indent=2, default=str))
    else:
        context = (st.info or {}).get("operational_context", "-")
        counts = st.counts or {}
        print(f"server:     {cfg.name} ({cfg.tier} tier) on {cfg.host}")
        print(f"url:        {cfg.url}  (local {cfg.local_url})")
        print(f"pid:        {st.pid if st.pid else 'not running'}")
        print(f"answers:    {'yes' if st.answers else 'no' + (' (' + st.problem + ')' if st.problem else '')}")
        print(f"context:    {context}")
        print(f"catalog:    {counts.get('references', '-')} references, {counts.get('mappings', '-')} mappings")
        print(f"database:   {cfg.database.engine} {cfg.database.name}")
    if not st.up:
        raise Exit(code=1)


@ops_task(help={"args": "manage.py arguments as one string; or put them after `--`"})
def manage(c, args=""):
    """Run any manage.py command in the server's environment: `inv manage -- shell`."""
    import shlex

    from crdsops.runtime.environ import manage as run_manage

    cfg = installed_config()
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

    cfg = installed_config()
    checks = selftest.run(cfg, django_tests=not live_only, live=not django_only)
    print(f"runtests {cfg.name}: {checks.summary}")
    if checks.failed:
        raise Exit(code=1)
