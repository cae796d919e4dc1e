"""What every web-server backend shares: the interface, and the process helpers written once.

A backend knows how to launch one kind of web server and where its pid file and log are;
``crdsops.runtime.service`` does the waiting, the health check and the error reporting.
The helpers read ``/proc`` (Linux only, like the servers): a pid is "alive" while it exists
and is not a zombie; a pid file names one process; signals go to its session when it leads one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from crdsops import commands, failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.runtime import health


class Backend:
    """The interface; ``RunserverBackend`` and ``ModWsgiBackend`` implement it."""

    name = "?"

    def pid_file(self, config: ServerConfig) -> Path:
        raise NotImplementedError

    def log_file(self, config: ServerConfig) -> Path:
        raise NotImplementedError

    def looks_like_ours(self, cmdline: str) -> bool:
        """Whether a process with this command line is this backend's server (pids get reused)."""
        raise NotImplementedError

    def preflight(self, config: ServerConfig) -> None:
        """Read-only checks install runs before it changes anything."""

    def prepare(self, config: ServerConfig) -> None:
        """Install-time set-up of the web server."""

    def start(self, config: ServerConfig) -> int:
        """Launch the server in the background; return its pid (it may not answer yet)."""
        raise NotImplementedError

    def foreground(self, config: ServerConfig) -> int:
        """Run the server in this terminal until it exits; return an exit code for ``inv``."""
        raise NotImplementedError

    def stop(self, config: ServerConfig, pid: int, timeout: float) -> bool:
        """Stop the server whose pid is ``pid``; return whether it had to be killed."""
        raise NotImplementedError

    def sweep(self, config: ServerConfig) -> bool:
        """Stop processes of this server that no pid file names; return whether there were any."""
        return False

    def reload(self, config: ServerConfig, pid: int) -> None:
        """Take up the new code and configuration while the server runs; return once the server
        answers get_server_info again.

        This fallback is a restart, for web servers with nothing better: stop, then start, so the
        port is closed for a moment and requests in flight are cut (``graceful`` says so to the plan).
        """
        self.stop(config, pid, config.web.stop_timeout)
        remove_pid_file_of(self.pid_file(config), pid)
        new = self.start(config)
        try:
            failpoints.hit("service.started")
            if not health.wait_until_answers(config.local_url, config.web.start_timeout, lambda: alive(new)):
                raise CrdsOpsError(f"{config.name} did not answer within {config.web.start_timeout}s of its "
                                   f"restart; see {self.log_file(config)}")
        except BaseException:  # stop it, so that whoever puts the server back starts it whole
            with interrupts.shielded(f"stopping the {config.name} it was starting"):
                self.stop(config, new, config.web.stop_timeout)
                remove_pid_file_of(self.pid_file(config), new)
            raise

    def reload_text(self, config: ServerConfig) -> str:
        """What ``reload`` does, for the plan (a graceful backend says how it keeps serving)."""
        return "take up the new code and configuration"

    @property
    def graceful(self) -> bool:
        """Whether ``reload`` keeps serving (a backend of its own), or is this fallback's restart."""
        return type(self).reload is not Backend.reload


# --- processes ---------------------------------------------------------------------------

def cmdline(pid: int) -> str | None:
    """The command line of a live process (words joined by spaces); None if gone or a zombie.

    A process whose main thread is a zombie while its other threads still exit (a threaded
    server killed mid-request) still holds its files and its listening socket: it is alive.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z" and len(list(Path(f"/proc/{pid}/task").iterdir())) <= 1:
            return None
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    return cmdline(pid) is not None


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pids_matching(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = cmdline(int(entry.name))
            if line and marker in line + " ":
                found.append(int(entry.name))
    return found


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


def remove_pid_file_of(path: Path, pid: int) -> None:
    """Remove the pid file if it still names ``pid`` (a restore may have started a new server)."""
    if read_pid_file(path) == pid:
        path.unlink(missing_ok=True)


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pid: int, sig: int) -> None:
    """Signal the session a background start made; a foreground server leads no group."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    kill(pid, sig)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)


def terminate(pid: int, timeout: float, group: bool = True) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; return whether it had to be killed."""
    send = signal_group if group else kill
    send(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return False
    send(pid, signal.SIGKILL)
    wait_gone(pid, 5)
    return True


def run_foreground(argv: list[str], pid_file: Path | None = None, **popen_kwargs) -> int:
    """Run a server in this terminal until it exits; return an exit code for ``inv``.

    Ctrl-C reaches the server through the terminal's process group. SIGTERM and SIGHUP sent to
    ``inv`` alone (``timeout``, ``kill PID``, a closed terminal) are passed on to the server, so
    it never outlives ``inv`` as an orphan that no pid file names. It reads this terminal's stdin.
    """
    popen_kwargs.setdefault("stdin", None)
    with commands.start(argv, what=f"the server ({argv[0]})", **popen_kwargs) as proc:
        if pid_file is not None:
            write_pid_file(pid_file, proc.pid)

        def forward(signum, _frame):
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()  # as subprocess's call() does on Ctrl-C
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if pid_file is not None:
                remove_pid_file_of(pid_file, proc.pid)
    return 128 - code if code < 0 else code
