"""Start, stop and inspect the installed server, whichever web server fronts it.

A backend knows how to launch one kind of web server (Django's ``runserver`` here, Apache
with mod_wsgi in ``crdsops.modwsgi``) and where its pid file is; the waiting, the health
check, the graceful-then-forceful stop and the error reporting are shared.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from crdsops import health
from crdsops.config import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, tail
from crdsops.serverenv import SERVER_DIR, child_environ, manage_argv, paths


class Backend:
    """Django's development server in its own session, logging to the server's log."""

    name = "runserver"

    def pid_file(self, config: ServerConfig) -> Path:
        return paths(config)["pid"]

    def log_file(self, config: ServerConfig) -> Path:
        return paths(config)["log"]

    def command(self, config: ServerConfig) -> list[str]:
        web = config.web
        return manage_argv(config, "runserver", "--noreload", "--skip-checks", f"{web.host}:{web.port}")

    def looks_like_ours(self, cmdline: str) -> bool:
        return "manage.py" in cmdline and "runserver" in cmdline

    def preflight(self, config: ServerConfig) -> None:
        """Read-only checks install runs before it changes anything; nothing for runserver."""

    def prepare(self, config: ServerConfig) -> None:
        """Install-time set-up of the web server; nothing for runserver."""

    def start(self, config: ServerConfig) -> int:
        log = self.log_file(config)
        ensure_dir(log.parent)
        ensure_dir(self.pid_file(config).parent)
        with open(log, "ab") as out:
            os.chmod(log, 0o600)
            process = subprocess.Popen(
                self.command(config), cwd=SERVER_DIR, env=child_environ(config),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file(config).write_text(f"{process.pid}\n")
        return process.pid

    def foreground(self, config: ServerConfig) -> int:
        # The pid file makes a foreground server as visible as a background one: status shows
        # it, and restore, mirror and stop stop it instead of swapping data under it.
        ensure_dir(self.pid_file(config).parent)
        return run_foreground(self.command(config), pid_file=self.pid_file(config),
                              cwd=SERVER_DIR, env=child_environ(config))

    def sweep(self, config: ServerConfig) -> bool:
        """Stop processes of this server that no pid file names; return whether there were any."""
        return False

    def stop(self, config: ServerConfig, pid: int, timeout: float) -> bool:
        """Ask the process group to stop; kill it after ``timeout``. Return whether it was forced."""
        _signal_group(pid, signal.SIGTERM)
        if _wait_gone(pid, timeout):
            return False
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5)
        return True


def run_foreground(argv: list[str], pid_file: Path | None = None, **popen_kwargs) -> int:
    """Run a server in this terminal until it exits; return an exit code for ``inv``.

    Ctrl-C reaches the server through the terminal's process group. SIGTERM and SIGHUP sent to
    ``inv`` alone (``timeout``, ``kill PID``, a closed terminal) are passed on to the server, so
    it never outlives ``inv`` as an orphan that no pid file names.
    """
    with subprocess.Popen(argv, **popen_kwargs) as proc:
        if pid_file is not None:
            pid_file.write_text(f"{proc.pid}\n")

        def forward(signum, _frame):
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()  # as subprocess.call does on Ctrl-C
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if pid_file is not None:
                _remove_pid_file_of(pid_file, proc.pid)
    return 128 - code if code < 0 else code


def _remove_pid_file_of(pid_file: Path, pid: int) -> None:
    """Remove ``pid_file`` if it still names ``pid`` (a restore may have started a new server)."""
    try:
        if pid_file.read_text().split()[0] == str(pid):
            pid_file.unlink()
    except (FileNotFoundError, IndexError):
        pass


def backend_for(config: ServerConfig) -> Backend:
    if config.web.server == "mod_wsgi":
        from crdsops.modwsgi import ModWsgiBackend

        return ModWsgiBackend()
    return Backend()


@dataclass
class Status:
    name: str
    url: str
    local_url: str
    pid: int | None
    answers: bool
    info: dict | None
    counts: dict | None
    engine: str
    problem: str = ""

    @property
    def up(self) -> bool:
        return self.pid is not None and self.answers


def running_pid(config: ServerConfig, backend: Backend | None = None) -> int | None:
    """The pid of this server's running web server, or None (a stale pid file is ignored)."""
    backend = backend or backend_for(config)
    try:
        pid = int(backend.pid_file(config).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    cmdline = _cmdline(pid)
    if cmdline is None or not backend.looks_like_ours(cmdline):
        return None
    return pid


def start(config: ServerConfig, say=print) -> int:
    """Start the server in the background and return once it answers ``get_server_info``."""
    backend = backend_for(config)
    pid = running_pid(config, backend)
    if pid is not None:
        say(f"{config.name} is already running (pid {pid}) at {config.local_url}; nothing started")
        return pid
    check_port_free(config.web.host, config.web.port)
    say(f"starting {config.name} ({backend.name}) at {config.local_url} ...")
    pid = backend.start(config)
    if health.wait_until_answers(config.local_url, config.web.start_timeout, lambda: _alive(pid)):
        say(f"{config.name} is up (pid {pid}) at {config.local_url}; log: {backend.log_file(config)}")
        return pid
    alive = _alive(pid)
    if alive:
        backend.stop(config, pid, config.web.stop_timeout)
    backend.pid_file(config).unlink(missing_ok=True)
    why = "did not answer within %ss" % config.web.start_timeout if alive else "exited during start-up"
    log = backend.log_file(config)
    raise CrdsOpsError(
        f"{config.name} {why}; see {log}; its last lines:\n{tail(log) or '(empty log)'}"
    )


def stop(config: ServerConfig, say=print) -> bool:
    """Stop the server if it runs; return whether anything was stopped."""
    backend = backend_for(config)
    pid = running_pid(config, backend)
    if pid is None:
        backend.pid_file(config).unlink(missing_ok=True)
        if backend.sweep(config):
            say(f"{config.name}: stopped processes its pid file no longer named")
            return True
        say(f"{config.name} is not running")
        return False
    say(f"stopping {config.name} (pid {pid}) ...")
    forced = backend.stop(config, pid, config.web.stop_timeout)
    backend.pid_file(config).unlink(missing_ok=True)
    say(f"{config.name} stopped" + (f" (killed after {config.web.stop_timeout}s)" if forced else ""))
    return True


def status(config: ServerConfig) -> Status:
    backend = backend_for(config)
    pid = running_pid(config, backend)
    info = counts = None
    problem = ""
    try:
        info = health.rpc(config.local_url, "get_server_info", timeout=5)
        counts = health.rpc(config.local_url, "get_catalog_counts", timeout=5)
    except CrdsOpsError as err:
        problem = str(err)
    return Status(config.name, config.url, config.local_url, pid, info is not None, info, counts,
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


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None
    if state == "Z":
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    return _cmdline(pid) is not None


def _signal_group(pid: int, sig: int) -> None:
    """Signal the session a background start made; a foreground server leads no group."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)
