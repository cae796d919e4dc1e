"""Django's development server, in its own session, logging to the server's log (the ``django`` kind).

It runs as ``manage.py serve`` (``server/crds_server/devserver.py``: Django's dev server that can
hand its listening socket to a successor), so ``reload`` takes up new code and configuration
without refusing or resetting a request: the new process loads everything while the old one
serves, then takes the socket over; the old one finishes its requests and exits. A server still
running as ``manage.py runserver`` (started before this) is restarted once instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crdsops import commands, interrupts
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir
from crdsops.runtime import health
from crdsops.runtime.backends import handover
from crdsops.runtime.backends.base import Backend, alive, cmdline, run_foreground, terminate, wait_gone, write_pid_file
from crdsops.runtime.environ import child_environ, manage_argv, server_dir

log = logging.getLogger(__name__)


class RunserverBackend(Backend):
    name = "runserver"

    def pid_file(self, config: ServerConfig) -> Path:
        return config.layout.pid_file

    def log_file(self, config: ServerConfig) -> Path:
        return config.layout.server_log

    def command(self, config: ServerConfig, *options: str) -> list[str]:
        return manage_argv(config, "serve", "--control", str(config.layout.server_control), *options,
                           self.address(config))

    @staticmethod
    def address(config: ServerConfig) -> str:
        return f"{config.web.host}:{config.web.port}"

    def looks_like_ours(self, cmdline: str) -> bool:
        words = cmdline.split()
        return "manage.py" in cmdline and ("serve" in words or "runserver" in words)  # runserver: started before

    def start(self, config: ServerConfig) -> int:
        log = self.log_file(config)
        ensure_dir(log.parent)
        ensure_dir(self.pid_file(config).parent)
        with open(log, "ab") as out:
            os.chmod(log, 0o600)
            process = commands.start(
                self.command(config), what=f"starting {config.name}", cwd=server_dir(config), env=child_environ(config),
                stdin=commands.DEVNULL, stdout=out, stderr=commands.STDOUT,
                start_new_session=True,  # a server lives on after the task; side_by_side leaves it alone
            )
        write_pid_file(self.pid_file(config), process.pid)
        return process.pid

    def foreground(self, config: ServerConfig) -> int:
        # The pid file makes a foreground server as visible as a background one: status shows
        # it, restore and mirror hold its requests for their swap, and stop stops it.
        ensure_dir(self.pid_file(config).parent)
        return run_foreground(self.command(config), pid_file=self.pid_file(config),
                              cwd=server_dir(config), env=child_environ(config))

    def stop(self, config: ServerConfig, pid: int, timeout: float) -> bool:
        return terminate(pid, timeout)

    def reload(self, config: ServerConfig, pid: int) -> None:
        """Hand the listening socket to a new server process; return once it answers get_server_info.

        Nothing is refused: the new process loads Django and the application while the old one
        serves; both accept from the one socket for a moment; the old one then finishes what it
        holds and exits. If the new one fails before that, the old one goes on serving and the
        error is one line with the new one's output. A server that cannot hand over is restarted.
        """
        why_not = handover.why_not(cmdline(pid) or "", config.layout.server_control, self.address(config))
        if why_not:
            log.info(f"{config.name}: {why_not}; restarting it instead (it refuses requests for a moment)")
            super().reload(config, pid)
            return
        server_log = self.log_file(config)
        log.info(f"{config.name}: starting a new server that takes the socket over from pid {pid} ...")
        try:
            new = handover.start_successor(
                self.command(config, "--take-over", "--log", str(server_log)), timeout=config.web.start_timeout,
                what=f"the new {config.name} server", cwd=server_dir(config), env=child_environ(config),
                stdin=commands.DEVNULL)
        except handover.HandoverFailed as err:
            _append(server_log, err.output)
            raise CrdsOpsError(
                f"{config.name}: the new server {err}; the old one (pid {pid}) goes on serving; its output:\n"
                f"{_tail(err.output) or '(none)'}") from None
        with interrupts.shielded(f"recording the new {config.name} server (pid {new.pid})"):
            write_pid_file(self.pid_file(config), new.pid)
            _append(server_log, new.output)
        log.info(f"{config.name}: pid {new.pid} took over; pid {pid} finishes its requests and exits")
        if not wait_gone(pid, config.web.stop_timeout):
            log.warning(f"{config.name}: the old server (pid {pid}) still runs after {config.web.stop_timeout}s; "
                        "stopping it")
            terminate(pid, 5)
        if not health.wait_until_answers(config.local_url, config.web.start_timeout, lambda: alive(new.pid)):
            raise CrdsOpsError(f"{config.name}: the new server (pid {new.pid}) took over but does not answer "
                               f"get_server_info; see {server_log}")

    def reload_text(self, config: ServerConfig) -> str:
        return ("start a new server process beside the old one; once it answers in itself it takes the "
                "listening socket over (nothing refused), and the old one answers what it holds and exits")


def _append(path: Path, text: str) -> None:
    """The new server's start-up output, into the server's log where the rest of its output goes."""
    if text:
        with open(path, "a") as out:
            out.write(text if text.endswith("\n") else text + "\n")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
