"""fab entry point: the crdsops tasks, run on the hosts given with ``-H``.

    fab -H dlhstcrdstest status             # `inv status` in dlhstcrdstest's crdsops checkout
    fab -H root@127.0.0.2:2222 backup --dry-run
    fab fleet-status --obs hst              # every hst server at once, one line per host

Every task of the `inv` collection has a twin here with the same name and flags; it runs
``inv TASK FLAGS`` on each ``-H`` host over SSH (see crdsops.remote.ssh: host keys checked
against known_hosts, unknown or changed keys refused), streams its output and exits with
its exit code. The fleet tasks run here and reach the hosts themselves.
"""

from __future__ import annotations

import inspect
import sys

from fabric import task
from invoke import Collection, Exit

import tasks as inv_tasks
from crdsops.tasks import remote as fleet_tasks
from crdsops.tasks._common import ops_task

LOCAL_ONLY = {"fleet-status", "fleet-backup"}


def _flags(inv_task, kwargs: dict) -> list[str]:
    """Turn the parsed flags back into `inv` flags: only those that differ from the default."""
    argv = []
    for arg in inv_task.get_arguments():
        value = kwargs.get(arg.name, arg.default)
        if value == arg.default or value is None:
            continue
        name = arg.names[0]
        flag = ("-" if len(name) == 1 else "--") + name  # invoke gives a one-letter name only -n
        if arg.kind is bool:
            argv.append(flag if value else "--no-" + name)
        elif len(name) == 1:
            for each in value if isinstance(value, list) else [value]:
                argv += [flag, str(each)]
        elif isinstance(value, list):
            argv += [f"{flag}={v}" for v in value]
        else:
            argv.append(f"{flag}={value}")
    return argv


def _spec(c) -> str:
    """The ``-H`` value back as ``[user@]host[:port]``, with only the parts it gave."""
    from fabric import Connection

    plain = Connection(c.original_host, config=c.config)  # what ssh_config/defaults alone would give
    user = f"{c.user}@" if c.user != plain.user else ""
    port = f":{c.port}" if c.port != plain.port else ""
    return f"{user}{c.original_host}{port}"


def _remainder() -> list[str]:
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


def _forwarder(name: str, inv_task):
    def body(c, **kwargs):
        from crdsops.remote import ssh as remote

        if getattr(c, "original_host", None) is None:
            raise Exit(f"error: say where to run it: `fab -H HOST {name} ...` (or run `inv {name}` here)")
        target = remote.target_for_host(_spec(c))
        conn = remote.connection(target, config=c.config)
        argv = [name, *_flags(inv_task, kwargs)]
        rest = _remainder()
        if rest:
            argv += ["--", *rest]
        try:
            result = remote.run_inv(conn, target.checkout, argv, env=remote.control_env())
        finally:
            conn.close()
        if result.exited:
            raise Exit(code=result.exited)

    params = list(inspect.signature(inv_task.body).parameters.values())
    body.__signature__ = inspect.Signature(params)
    body.__name__ = name.replace("-", "_")
    body.__doc__ = (inv_task.__doc__ or "").strip().splitlines()[0] + " (on each -H host)" if inv_task.__doc__ else None
    return ops_task(name=name, aliases=tuple(inv_task.aliases), help=dict(inv_task.help or {}))(body)


ns = Collection()
for inv_name in sorted(inv_tasks.ns.task_names):
    each = inv_tasks.ns[inv_name]
    if inv_name in LOCAL_ONLY:
        continue
    ns.add_task(_forwarder(inv_name, each))
ns.add_task(fleet_tasks.fleet_status)
ns.add_task(fleet_tasks.fleet_backup)

__all__ = ["ns", "task"]
