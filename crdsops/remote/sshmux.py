"""One SSH connection per operation: an OpenSSH ControlMaster that every later ssh and rsync rides.

Opening an SSH connection costs a key exchange and an authentication (0.2-0.5 s on a busy
2-core machine). A mirror used to pay that for its probe connection, for the backup fetch
and for each rsync. A ``Master`` opens one connection and every later command goes through it:

* the connection is ``ssh -o ControlMaster=yes -o ControlPersist=... -N HOST``, started
  once, with every option of ``ssh.ssh_argv``: host keys are checked as strictly as for any
  other connection (known_hosts only, nothing added, no prompt);
* its socket lives in a private directory (``mkdtemp``: mode 0700), so no other user can
  reach the host through it;
* later commands use ``Master.target``, a ``Target`` whose ``ssh_argv`` adds
  ``-o ControlPath=SOCKET -o ControlMaster=no``; rsync gets that as its ``-e``. Should the
  master be gone (a cut connection), such a client opens a connection of its own, with
  the same checks, rather than fail;
* the probes run as ``ssh`` commands over it: ``Master`` has the part of fabric's
  ``Connection`` that ``ssh.run`` and ``ssh.run_inv`` use (``open``, ``run``, ``close``,
  ``host``), so they take either. Keeping paramiko for the probes would have cost a second
  connection (measured on this machine: paramiko's connection and four probes 0.8-0.9 s,
  the master's start 0.2-0.3 s and four probes over it 0.7 s: each remote command costs
  sshd a session either way);
* ``close()`` sends ``ssh -O exit``, ends the master by its pid if that did not, and removes
  the directory. The operation calls it in a ``finally``, so an error, Ctrl-C or SIGTERM
  closes it too. ``ControlPersist`` bounds what a SIGKILL leaves: the master ends itself
  once it has been idle that long.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from crdsops import commands, interrupts
from crdsops.errors import CrdsOpsError
from crdsops.remote.ssh import CONNECT_TIMEOUT, Target, ssh_argv

log = logging.getLogger(__name__)

# Idle seconds before an orphaned master (its owner killed) ends itself. Long enough for the
# idle spells of a mirror (the plan, an operator reading it before answering): a client that
# comes later than that connects on its own.
PERSIST_S = 900
# A unix socket's path must fit in sockaddr_un (107 characters on Linux); ssh first binds it
# under a name 17 characters longer (SOCKET.XXXXXXXXXXXXXXXX), then renames it.
SOCKET_PATH_MAX = 107 - 17


@dataclass(frozen=True)
class Remote:
    """What a command run over the master said (the fields of fabric's Result that callers read)."""

    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0


class Master:
    """One OpenSSH connection to ``target`` that every later ssh and rsync shares (module docstring)."""

    def __init__(self, target: Target):
        self.plain = target
        self.dir: Path | None = None
        self.pid: int | None = None

    # the parts of fabric's Connection that ssh.run, ssh.run_inv and the probes read
    @property
    def host(self) -> str:
        return self.plain.host

    @property
    def port(self) -> int | None:
        return self.plain.port

    @property
    def user(self) -> str | None:
        return self.plain.user

    @property
    def socket(self) -> Path | None:
        return self.dir / "cm" if self.dir else None

    @property
    def target(self) -> Target:
        """The target whose ssh (and rsync -e) rides this master once it is open."""
        return replace(self.plain, control_path=str(self.socket)) if self.dir else self.plain

    def __enter__(self) -> Master:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> Master:
        """Connect now (once; later calls return at once); one CrdsOpsError line if it cannot."""
        if self.dir is not None:
            return self
        self.dir = Path(tempfile.mkdtemp(prefix="crdsops-ssh-", dir=_socket_parent()))
        argv = [*ssh_argv(self.plain), "-o", "ControlMaster=yes", "-o", f"ControlPath={self.socket}",
                "-o", f"ControlPersist={PERSIST_S}", "-N", self.plain.host]
        # ControlPersist puts the master in the background (its output on /dev/null) once it has
        # authenticated: this returns then, or with ssh's reason for not getting that far.
        result = commands.run(argv, what=f"SSH to {self.plain.where}", timeout=3 * CONNECT_TIMEOUT, check=False)
        if not result.ok:
            raise CrdsOpsError(explain(result.stderr, self.plain))
        self.pid = self._master_pid()
        log.debug(f"SSH to {self.plain.where}: one connection (master pid {self.pid}) for this task")
        return self

    def _master_pid(self) -> int | None:
        said = commands.run(self._control("check"), what="ssh -O check", timeout=CONNECT_TIMEOUT, check=False)
        found = re.search(r"pid=(\d+)", said.stderr)
        return int(found.group(1)) if found else None

    def _control(self, command: str) -> list[str]:
        return [*ssh_argv(self.target), "-O", command, self.plain.host]

    def close(self) -> None:
        """Ask the master to exit, end it by its pid if it did not, remove its directory; never raises."""
        if self.dir is None:
            return
        with interrupts.shielded("closing the SSH connection"):
            try:
                if self.socket.exists():
                    commands.run(self._control("exit"), what="ssh -O exit", timeout=CONNECT_TIMEOUT, check=False)
                _end(self.pid)
            except CrdsOpsError as err:
                log.warning(f"could not close the SSH connection to {self.plain.where} cleanly ({err})")
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir, self.pid = None, None

    def run(self, command: str, warn: bool = True, hide: bool = True, pty: bool = False,
            in_stream: bool = False) -> Remote:
        """Run the shell ``command`` on the host over the master (fabric's ``run``, for what we call it with).

        ``hide=False`` streams its output here as it comes (and keeps it, for the error line).
        An exit of 255 is ssh's own: the connection failed, a CrdsOpsError line.
        """
        self.open()
        argv = [*ssh_argv(self.target), self.plain.host, command]
        if hide:
            res = commands.run(argv, what=f"SSH to {self.plain.where}", check=False)
            result = Remote(res.returncode, res.stdout, res.stderr)
        else:
            result = _streamed(argv, f"SSH to {self.plain.where}")
        if result.exited == 255:
            raise CrdsOpsError(explain(result.stderr, self.plain))
        if result.exited != 0 and not warn:
            raise CrdsOpsError(f"`{command}` on {self.plain.where} failed (exit {result.exited}: "
                               f"{commands.last_line(result.stderr) or 'no output'})")
        return result


def _socket_parent() -> str:
    """Where the private directory goes: the temporary directory, unless its path is too long for a socket
    (or holds ``%``, which ssh would read as a ControlPath token)."""
    parent = tempfile.gettempdir()
    if len(parent) + len("/crdsops-ssh-XXXXXXXX/cm") > SOCKET_PATH_MAX or "%" in parent:
        return "/tmp"
    return parent


def _end(pid: int | None) -> None:
    """SIGTERM the master ``pid`` if it is still there and still ssh (``-O exit`` normally ended it)."""
    if pid is None:
        return
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "ssh":
            return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _streamed(argv: list[str], what: str) -> Remote:
    """Run ``argv``, copying its output here line by line as it comes; what it said, kept."""
    proc = commands.start(argv, what=what, stdout=commands.PIPE, stderr=commands.PIPE, text=True, errors="replace")
    err_lines: list[str] = []

    def copy_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()

    reader = threading.Thread(target=copy_stderr, daemon=True)
    reader.start()
    out_lines = []
    try:
        for line in proc.stdout:
            out_lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join()
    return Remote(code, "".join(out_lines), "".join(err_lines))


def explain(stderr: str, target: Target) -> str:
    """One line for why OpenSSH could not connect, as ``ssh.explain`` says it for paramiko's errors."""
    where, known = target.where, target.known_hosts or "~/.ssh/known_hosts"
    host_name = f"[{target.host}]:{target.port}" if target.port and target.port != 22 else target.host
    port = target.port or 22
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        offered = re.search(r"key sent by the remote host is\s+(\S+?)\.?\s*$", stderr, re.M)
        return (f"host key of {where} CHANGED: it offered {offered.group(1) if offered else 'another key'}, "
                f"{known} records another; refusing. If the host was rebuilt, check the new key out of band, "
                f"then `ssh-keygen -R '{host_name}' -f {known}` and add the new one")
    if "host key is known for" in stderr or "Host key verification failed" in stderr:
        return (f"host key of {where} is unknown (not in {known}); refusing. Check its fingerprint "
                f"out of band, then add it: `ssh-keyscan -p {port} {target.host} >> {known}`")
    if "Permission denied" in stderr:
        said = commands.last_line(stderr)
        return f"{where} refused our key for user {target.user} ({said}); check ssh.user and ssh.key"
    if "Could not resolve hostname" in stderr:
        said = commands.last_line(stderr).rsplit(": ", 1)[-1]
        return f"cannot resolve host {target.host} ({said}); check the host name"
    reached = re.search(r"connect to host \S+ port \d+: (.+)$", stderr, re.M)
    if reached:
        return f"cannot reach {where} ({reached.group(1).strip()}); is the host up and sshd listening?"
    return f"SSH to {where} failed ({commands.last_line(stderr) or 'no reason given'})"
