"""Start, stop and inspect the installed server, whichever web server fronts it.

A backend knows how to launch one kind of web server (Django's ``runserver`` here, Apache
with mod_wsgi in ``crdsops.runtime.backends.modwsgi``) and where its pid file is; the waiting, the health
check, the graceful-then-forceful stop and the error reporting are shared.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from dataclasses import dataclass

from crdsops import failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.db.catalog import CatalogCounts
from crdsops.errors import CrdsOpsError
from crdsops.files import tail
from crdsops.runtime import health
from crdsops.runtime.backends import backend_for
from crdsops.runtime.backends.base import Backend, alive, cmdline, read_pid_file

log = logging.getLogger(__name__)


@dataclass
class Status:
    name: str
    url: str
    local_url: str
    pid: int | None
    answers: bool
    context: str | None  # the operational context get_server_info names
    counts: CatalogCounts | None
    engine: str
    problem: str = ""

    @property
    def up(self) -> bool:
        return self.pid is not None and self.answers


def running_pid(config: ServerConfig, backend: Backend | None = None) -> int | None:
    """The pid of this server's running web server, or None (a stale pid file is ignored)."""
    backend = backend or backend_for(config)
    pid = read_pid_file(backend.pid_file(config))
    if pid is None:
        return None
    line = cmdline(pid)
    # an empty command line is a process between fork and exec, or exiting: still ours to stop
    if line is None or (line and not backend.looks_like_ours(line)):
        return None
    return pid


def start(config: ServerConfig) -> int:
    """Start the server in the background and return once it answers ``get_server_info``."""
    backend = backend_for(config)
    pid = running_pid(config, backend)
    if pid is not None:
        log.info(f"{config.name} is already running (pid {pid}) at {config.local_url}; nothing started")
        return pid
    check_port_free(config.web.host, config.web.port)
    log.info(f"starting {config.name} ({backend.name}) at {config.local_url} ...")
    with interrupts.shielded(f"starting {config.name}"):  # a pid file for whatever was spawned
        pid = backend.start(config)
    try:
        failpoints.hit("service.started")
        answered = health.wait_until_answers(config.local_url, config.web.start_timeout, lambda: alive(pid))
    except BaseException:
        with interrupts.shielded(f"stopping the {config.name} it was starting"):
            _stop_what_we_started(config, backend, pid)
        raise
    if answered:
        log.info(f"{config.name} is up (pid {pid}) at {config.local_url}; log: {backend.log_file(config)}")
        return pid
    still = alive(pid)
    _stop_what_we_started(config, backend, pid)
    why = "did not answer within %ss" % config.web.start_timeout if still else "exited during start-up"
    server_log = backend.log_file(config)
    raise CrdsOpsError(
        f"{config.name} {why}; see {server_log}; its last lines:\n{tail(server_log) or '(empty log)'}"
    )


def reload(config: ServerConfig, pid: int) -> None:
    """Take up new code and configuration (``Backend.reload``); return once it answers again."""
    backend = backend_for(config)
    how = "reloading" if backend.graceful else "restarting"
    log.info(f"{how} {config.name} (pid {pid}) ...")
    failpoints.hit("service.reloading")
    backend.reload(config, pid)
    now = running_pid(config, backend)
    log.info(f"{config.name} is up (pid {now}) at {config.local_url}, "
             f"{'reloaded gracefully' if backend.graceful else 'restarted'}")


def _stop_what_we_started(config: ServerConfig, backend: Backend, pid: int) -> None:
    if alive(pid):
        backend.stop(config, pid, config.web.stop_timeout)
    backend.pid_file(config).unlink(missing_ok=True)


def stop(config: ServerConfig) -> bool:
    """Stop the server if it runs; return whether anything was stopped."""
    backend = backend_for(config)
    pid = running_pid(config, backend)
    if pid is None:
        backend.pid_file(config).unlink(missing_ok=True)
        if backend.sweep(config):
            log.info(f"{config.name}: stopped processes its pid file no longer named")
            return True
        log.info(f"{config.name} is not running")
        return False
    log.info(f"stopping {config.name} (pid {pid}) ...")
    failpoints.hit("service.stopping")
    forced = backend.stop(config, pid, config.web.stop_timeout)
    backend.pid_file(config).unlink(missing_ok=True)
    log.info(f"{config.name} stopped" + (f" (killed after {config.web.stop_timeout}s)" if forced else ""))
    return True


@contextlib.contextmanager
def kept_as_it_was(config: ServerConfig):
    """Run the block; if it fails or is interrupted, put the server back up (or down) as it was.

    ``inv rerun`` and ``inv stop`` run under it: whatever stopped the server starts it again,
    and says in one line if it could not. The putting back finishes even through a second Ctrl-C.
    """
    was_up = running_pid(config) is not None
    try:
        yield
    except BaseException:
        with interrupts.shielded(f"putting {config.name} back as it was"):
            put_back(config, was_up)
        raise


def put_back(config: ServerConfig, was_up: bool) -> None:
    """Start the server if it was up and is not; stop it if it was down and is up now."""
    now_up = running_pid(config) is not None
    if was_up and not now_up:
        log.info(f"starting {config.name} again (it was up before) ...")
        try:
            start(config)
        except CrdsOpsError as err:
            log.info(f"could not start {config.name} again ({str(err).splitlines()[0]}); run `inv run`")
    elif not was_up and now_up:
        log.info(f"stopping {config.name} again (it was not running before) ...")
        try:
            stop(config)
        except CrdsOpsError as err:
            log.info(f"could not stop {config.name} again ({str(err).splitlines()[0]}); run `inv stop`")


def status(config: ServerConfig) -> Status:
    backend = backend_for(config)
    pid = running_pid(config, backend)
    info = counts = None
    problem = ""
    try:
        info = health.rpc(config.local_url, "get_server_info", timeout=5)
        counts = health.catalog_counts(config.local_url, timeout=5)
    except CrdsOpsError as err:
        problem = str(err)
    context = info.get("operational_context") if isinstance(info, dict) else None
    return Status(config.name, config.url, config.local_url, pid, info is not None, context, counts,
                  config.database.engine, problem)


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise CrdsOpsError(
                    f"port {port} on {host} is in use by another program; stop it or set web.port "
                    "in this server's config"
                ) from None
            raise CrdsOpsError(f"cannot listen on {host}:{port} ({err.strerror}); check web.host/web.port") from None


def foreground(config: ServerConfig) -> int:
    """Run the server in this terminal until Ctrl-C (development); its exit code."""
    backend = backend_for(config)
    if running_pid(config, backend) is not None:
        raise CrdsOpsError(f"{config.name} is already running in the background; `inv stop` it first")
    check_port_free(config.web.host, config.web.port)
    return backend.foreground(config)
