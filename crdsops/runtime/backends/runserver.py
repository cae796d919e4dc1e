"""Django's development server, in its own session, logging to the server's log (the ``django`` kind)."""

from __future__ import annotations

import os
from pathlib import Path

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.files import ensure_dir
from crdsops.runtime.backends.base import Backend, run_foreground, terminate, write_pid_file
from crdsops.runtime.environ import SERVER_DIR, child_environ, manage_argv


class RunserverBackend(Backend):
    name = "runserver"

    def pid_file(self, config: ServerConfig) -> Path:
        return config.layout.pid_file

    def log_file(self, config: ServerConfig) -> Path:
        return config.layout.server_log

    def command(self, config: ServerConfig) -> list[str]:
        web = config.web
        return manage_argv(config, "runserver", "--noreload", "--skip-checks", f"{web.host}:{web.port}")

    def looks_like_ours(self, cmdline: str) -> bool:
        return "manage.py" in cmdline and "runserver" in cmdline

    def start(self, config: ServerConfig) -> int:
        log = self.log_file(config)
        ensure_dir(log.parent)
        ensure_dir(self.pid_file(config).parent)
        with open(log, "ab") as out:
            os.chmod(log, 0o600)
            process = commands.start(
                self.command(config), what=f"starting {config.name}", cwd=SERVER_DIR, env=child_environ(config),
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
                              cwd=SERVER_DIR, env=child_environ(config))

    def stop(self, config: ServerConfig, pid: int, timeout: float) -> bool:
        return terminate(pid, timeout)
