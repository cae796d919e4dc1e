"""SSH to other CRDS hosts with Fabric, refusing unknown or changed host keys.

Fabric's ``Connection`` accepts any host key (it installs paramiko's ``AutoAddPolicy``
and loads no known_hosts file). Every connection made here is *hardened* instead: the
configured known_hosts file is loaded read-only and paramiko's ``RejectPolicy`` refuses
a host that is not in it; a host whose key differs from the recorded one raises
``BadHostKeyException``. Both become one clear line (:func:`explain`).

Where the connection settings come from, first match wins (argument > config > ssh_config
> default):

* user, port, key, gateway: ``-H user@host:port``, then the server config's ``ssh``
  section, then ``~/.ssh/config`` (Fabric reads it), then the defaults of ssh;
* known_hosts: the config's ``ssh.known_hosts``, then ssh_config's
  ``UserKnownHostsFile``, then ``~/.ssh/known_hosts``;
* the crdsops checkout on the host: the config's ``ssh.checkout``.

A remote task runs as ``cd CHECKOUT && .venv/bin/inv TASK ARGS`` on the host (the host's
own install record says which server it is), its output streamed, its exit code returned.
Every word of that command is ``shlex.quote``d.
"""

from __future__ import annotations

import re
import shlex
import socket
from dataclasses import dataclass, fields, replace
from pathlib import Path

from crdsops.config.model import ServerConfig, Ssh
from crdsops.errors import CrdsOpsError

CONNECT_TIMEOUT = 10
LOCAL_HOSTS = ("localhost",)


@dataclass(frozen=True, kw_only=True)
class Target(Ssh):
    """How to reach one host: a config's ``ssh`` settings, resolved, plus the host itself."""

    host: str
    label: str = ""
    control_path: str | None = None  # an open ControlMaster's socket (crdsops.remote.sshmux) that ssh rides

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def name(self) -> str:
        return self.label or self.where


def target_for(config: ServerConfig, host: str | None = None) -> Target:
    """The target of a configured server (``host`` overrides the config's VM name)."""
    settings = {f.name: getattr(config.ssh, f.name) for f in fields(Ssh)}
    return Target(host=host or config.host, label=config.name, **settings)


def parse_host(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` -> (user, host, port)."""
    user, _, hostport = spec.rpartition("@") if "@" in spec else (None, "", spec)
    host, port = hostport, None
    if hostport.count(":") == 1:
        host, _, text = hostport.partition(":")
        if not text.isdigit():
            raise CrdsOpsError(f"bad host {spec!r}: the port after ':' must be a number")
        port = int(text)
    if not host:
        raise CrdsOpsError(f"bad host {spec!r}: expected [user@]host[:port]")
    return user or None, host, port


def target_for_host(spec: str, configs: list[ServerConfig] | None = None) -> Target:
    """The target for a ``-H`` host: what the spec says, the rest from a config naming that host."""
    user, host, port = parse_host(spec)
    if configs is None:
        configs = all_configs()
    match = [c for c in configs if c.host == host and (port is None or c.ssh.port in (None, port))]
    if match:
        base = target_for(match[0])
        if len(match) > 1:
            base = replace(base, label=host)
    else:
        # not configured: known_hosts from ssh_config (UserKnownHostsFile), else ~/.ssh/known_hosts
        base = Target(host=host, checkout=_default_checkout())
    return replace(base, user=user or base.user, port=port or base.port)


def all_configs(observatory: str | None = None) -> list[ServerConfig]:
    """Every configured server (of one observatory), skipping configs that do not load."""
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import kinds, load_config, observatories

    configs = configs_here()
    found = []
    for obs in ([observatory] if observatory else observatories(configs)):
        for kind in kinds(obs, configs):
            try:
                found.append(load_config(obs, kind, configs))
            except CrdsOpsError:
                continue
    return found


def _default_checkout() -> Path | None:
    """``ssh.checkout`` of defaults.yaml (validated): where crdsops lives on hosts no config names."""
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import load_defaults_section

    return load_defaults_section(Ssh, "ssh", configs_here()).checkout


# --- connections ---------------------------------------------------------------------

def connection(target: Target, connect_timeout: int = CONNECT_TIMEOUT, config=None):
    """A hardened, not yet opened ``fabric.Connection`` to ``target``.

    ``config`` is a fabric Config (e.g. fab's, which carries ``fab -S ssh_config``).
    """
    from fabric import Connection

    connect_kwargs = {}
    if target.key:
        connect_kwargs["key_filename"] = [str(target.key)]
    gateway = None
    if target.gateway:
        g_user, g_host, g_port = parse_host(target.gateway)
        gateway = connection(Target(host=g_host, user=g_user or target.user, port=g_port, key=target.key,
                                    known_hosts=target.known_hosts), connect_timeout, config)
    conn = Connection(
        target.host, user=target.user, port=target.port, connect_timeout=connect_timeout,
        connect_kwargs=connect_kwargs, gateway=gateway, **({"config": config} if config is not None else {}),
    )
    return harden(conn, target.known_hosts)


def harden(conn, known_hosts: Path | None = None):
    """Make ``conn`` check host keys against ``known_hosts`` and refuse unknown or changed ones."""
    from paramiko import HostKeys, RejectPolicy

    _quiet_paramiko()
    path = known_hosts_for(conn, known_hosts)
    client = conn.client
    client._system_host_keys = HostKeys()  # forget anything loaded before (fabric 1/2 loaded ~/.ssh/known_hosts)
    client._host_keys = HostKeys()
    if path is not None and path.exists():
        try:
            client.load_system_host_keys(str(path))  # read-only: never written back
        except (OSError, ValueError) as err:
            raise CrdsOpsError(f"cannot read known_hosts file {path} ({err}); fix it or ssh.known_hosts") from None
    client.set_missing_host_key_policy(RejectPolicy())
    conn.crdsops_known_hosts = path
    return conn


def _quiet_paramiko() -> None:
    """Keep paramiko's transport thread from printing its tracebacks (logging's last resort).

    Every failure reaches the task as an exception that ``explain`` turns into one line; under
    ``inv --debug``/``fab --debug`` the root logger has a handler and paramiko's records still show.
    """
    import logging

    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())


def known_hosts_for(conn, known_hosts: Path | None) -> Path | None:
    if known_hosts:
        return Path(known_hosts)
    configured = (getattr(conn, "ssh_config", None) or {}).get("userknownhostsfile")
    if configured:
        return Path(str(configured).split()[0]).expanduser()
    return Path.home() / ".ssh" / "known_hosts"


def explain(err: BaseException, conn) -> str:
    """One line for a failure to connect or run: what happened and how to fix it."""
    import paramiko

    where = f"{conn.host}:{conn.port}"
    known = getattr(conn, "crdsops_known_hosts", None)
    host_name = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
    if isinstance(err, paramiko.BadHostKeyException):
        return (f"host key of {where} CHANGED: it offered {err.key.get_name()} "
                f"{err.key.fingerprint}, {known} records {err.expected_key.fingerprint}; refusing. "
                f"If the host was rebuilt, check the new key out of band, then "
                f"`ssh-keygen -R '{host_name}' -f {known}` and add the new one")
    if isinstance(err, paramiko.SSHException) and "not found in known_hosts" in str(err):
        return (f"host key of {where} is unknown (not in {known}); refusing. Check its fingerprint "
                f"out of band, then add it: `ssh-keyscan -p {conn.port} {conn.host} >> {known}`")
    if isinstance(err, paramiko.AuthenticationException):
        return f"{where} refused our key for user {conn.user} ({err}); check ssh.user and ssh.key"
    if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = sorted({e.strerror or str(e) for e in err.errors.values()})
        return f"cannot reach {where} ({'; '.join(reasons)}); is the host up and sshd listening?"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return f"cannot reach {where} (timed out); is the host up?"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve host {conn.host} ({err.strerror}); check the host name"
    if isinstance(err, (OSError, EOFError, paramiko.SSHException)):
        return f"SSH to {where} failed ({type(err).__name__}: {err})"
    return f"{where}: {type(err).__name__}: {err}"


def open_checked(conn):
    """Open ``conn`` now; any failure becomes a CrdsOpsError with one clear line."""
    try:
        conn.open()
    except CrdsOpsError:  # a Master's failure is one line already
        raise
    except Exception as err:  # paramiko/socket errors of many kinds
        raise CrdsOpsError(explain(err, conn)) from None
    return conn


# --- running inv on a host -----------------------------------------------------------

def inv_command(checkout: Path | str | None, argv: list[str], env: dict[str, str] | None = None) -> str:
    """The shell command that runs ``inv ARGV`` in ``checkout`` on the host (``env`` exported first)."""
    if not checkout:
        raise CrdsOpsError("no crdsops checkout known for this host; set ssh.checkout in its config")
    q = shlex.quote
    words = " ".join(q(a) for a in argv)
    exports = "".join(f"export {name}={q(value)} && " for name, value in (env or {}).items()
                      if _ENV_NAME.match(name))
    return (f"cd {q(str(checkout))} && {exports}if [ -x .venv/bin/inv ]; then exec .venv/bin/inv {words}; "
            f"else exec inv {words}; fi")


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def control_env() -> dict[str, str]:
    """What a task run from this control machine tells the host: ``CRDSOPS_VIA=user@this-host``.

    The host's audit log records it as where the run came from (``crdsops.runtime.audit``).
    """
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return {"CRDSOPS_VIA": f"{user}@{socket.gethostname()}"}


def run_inv(conn, checkout, argv: list[str], hide: bool = False, env: dict[str, str] | None = None):
    """Run ``inv ARGV`` on the host behind ``conn`` (a fabric Connection or an ``sshmux.Master``).

    Returns its result (``.exited``, ``.stdout``, ``.stderr``)."""
    open_checked(conn)
    try:
        return conn.run(inv_command(checkout, argv, env), warn=True, hide=hide, pty=False, in_stream=False)
    except CrdsOpsError:
        raise
    except Exception as err:
        raise CrdsOpsError(explain(err, conn)) from None


def run(conn, argv: list[str], hide: bool = True, warn: bool = True):
    """Run a command given as an argument list on the host (each word quoted)."""
    open_checked(conn)
    try:
        return conn.run(" ".join(shlex.quote(str(a)) for a in argv), warn=warn, hide=hide, pty=False,
                        in_stream=False)
    except Exception as err:
        if type(err).__module__.startswith("invoke") or isinstance(err, CrdsOpsError):
            raise
        raise CrdsOpsError(explain(err, conn)) from None


def ssh_argv(target: Target, batch: bool = True) -> list[str]:
    """The OpenSSH client command (for rsync -e) with the same host-key rules as our connections.

    With ``target.control_path`` it rides that master's connection (``crdsops.remote.sshmux``);
    the host-key options stay, for the connection ssh opens itself if the master is gone.
    """
    argv = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3"]
    if batch:
        argv += ["-o", "BatchMode=yes"]
    if target.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.key:
        argv += ["-i", str(target.key), "-o", "IdentitiesOnly=yes"]
    if target.user:
        argv += ["-l", target.user]
    if target.gateway:
        argv += ["-J", target.gateway]
    if target.control_path:
        argv += ["-o", f"ControlPath={target.control_path}", "-o", "ControlMaster=no"]
    return argv
