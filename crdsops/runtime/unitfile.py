"""The systemd unit that starts a server at boot, written by ``inv install`` into the server root.

``crds-<obs>-<kind>.service`` (``Layout.systemd_unit``); ``inv boot enable`` links and enables it
where systemd runs (``crdsops.data.boot``). Both backends are ``Type=forking`` services whose
``ExecStart`` is ``inv run``: it returns once the server answers ``get_server_info``, so systemd
calls the unit started only when it serves, and the pid file it names is the server's own:

- mod_wsgi kinds: Apache's ``run/httpd.pid``; ``ExecReload`` is the generated ``apachectl graceful``
  (what ``inv rerun`` ends with); ``ExecStop`` is ``inv stop`` (apachectl stop, then the sweep).
- the django kind: the dev server's ``run/server.pid``. Forking, not simple: ``inv rerun`` hands
  the listening socket to a new process and the old one exits; systemd follows a forking
  service's main pid through its pid file when the old main process exits, while a simple
  service whose process is the old server would end there and take the new one down with it.

``SuccessExitStatus=143``: the dev server exits 143 on SIGTERM, so an operator's ``inv stop``
is no failure for ``Restart=on-failure`` to undo. ``User=``/``Group=`` are the installing
account's when it is not root; as root they are left out: Apache drops to ``web.user`` itself
(its httpd.conf), and the django kind runs as ``inv run`` does for root.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import sys
from pathlib import Path

from crdsops.config.model import CHECKOUT, ServerConfig
from crdsops.files import write_atomic

log = logging.getLogger(__name__)

# crdsops's own environment overrides that say which server this is (as in the cron lines)
IDENTITY_ENV = ("CRDSOPS_CONFIGS", "CRDSOPS_STATE")


def unit_name(config: ServerConfig) -> str:
    return f"crds-{config.observatory}-{config.kind}.service"


def unit_path(config: ServerConfig) -> Path:
    return config.layout.systemd_unit(unit_name(config))


def inv_path() -> Path:
    """The ``inv`` of the stack running this crdsops (the one the cron lines call too)."""
    return Path(sys.executable).parent / "inv"


def identity_env() -> dict[str, str]:
    return {k: os.environ[k] for k in IDENTITY_ENV if os.environ.get(k)}


def _word(text: str, command: bool = True) -> str:
    """One word of a systemd command line (or assignment): quoted when it must be, specifiers escaped
    (``$`` is expanded in command lines only)."""
    text = text.replace("%", "%%")
    if command:
        text = text.replace("$", "$$")
    if any(ch.isspace() or ch in "\"'\\;" for ch in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _command(*words: object) -> str:
    return " ".join(_word(str(w)) for w in words)


def _account() -> list[str]:
    if os.geteuid() == 0:
        return []
    return [f"User={pwd.getpwuid(os.geteuid()).pw_name}", f"Group={grp.getgrgid(os.getegid()).gr_name}"]


def render_unit(config: ServerConfig) -> str:
    layout, web, inv = config.layout, config.web, inv_path()
    if web.server == "mod_wsgi":
        what, pid_file = "Apache/mod_wsgi", layout.httpd_pid
        reload = _command(layout.apachectl, "graceful")
    else:
        what, pid_file = "Django dev server", layout.pid_file
        reload = _command(inv, "rerun")
    env = identity_env()
    service = [
        "Type=forking",
        f"PIDFile={_word(str(pid_file), command=False)}",
        f"WorkingDirectory={_word(str(CHECKOUT), command=False)}",
        *([f"Environment={' '.join(_word(f'{k}={v}', command=False) for k, v in env.items())}"] if env else []),
        f"ExecStart={_command(inv, 'run')}",
        f"ExecStop={_command(inv, 'stop')}",
        f"ExecReload={reload}",
        "Restart=on-failure",
        "RestartSec=5",
        "SuccessExitStatus=143",
        f"TimeoutStartSec={web.start_timeout + 60}",
        f"TimeoutStopSec={web.stop_timeout + 30}",
        *_account(),
    ]
    return "\n".join([
        f"# {config.name}: written by `inv install` (crdsops.runtime.unitfile); do not edit, reinstall.",
        "# `inv boot enable` links and enables it; `inv boot disable` undoes that.",
        "[Unit]",
        f"Description=CRDS server {config.name} ({what}, crdsops)",
        "After=network-online.target remote-fs.target mariadb.service mysql.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def write(config: ServerConfig) -> bool:
    """Write the unit into the server root; return whether it changed."""
    changed = write_atomic(unit_path(config), render_unit(config), mode=0o644)
    log.info(f"systemd unit: {'written' if changed else 'unchanged'} {unit_path(config)}")
    return changed
