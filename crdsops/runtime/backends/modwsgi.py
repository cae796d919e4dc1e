"""Apache with mod_wsgi in front of the Django server, for the VM kinds (dev, test, ops, I&T).

``inv install`` runs ``mod_wsgi-express setup-server`` once per server into
``<root>/apache`` (the generated ``httpd.conf`` and ``apachectl``); ``inv run`` and
``inv stop`` are then ``apachectl start`` / ``apachectl stop`` on that Apache, with a sweep
afterwards so no Apache or mod_wsgi daemon process of this server is left behind.

Layout under the server root:

    apache/           server root of the generated Apache (httpd.conf, apachectl)
    crds.wsgi         the WSGI entry: sets the server's environment, then loads Django
    run/httpd.pid     Apache's pid file
    logs/apache_error.log, logs/apache_access.log

Apache serves ``/static/`` and ``/unchecked_get/{references,mappings}/<obs>/`` straight
from disk (``--url-alias``, with sendfile); only JSON-RPC and the status page go through
Python. Processes, threads, host and port come from ``web.*`` in the config. Run as root,
Apache needs a non-root ``web.user``/``web.group`` to serve as, and that user must be
able to read the stack, the checkout's ``server/`` and the database option file:
install checks this as that user and names the first directory that blocks it.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import time
from pathlib import Path

from crdsops import commands, failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic
from crdsops.runtime import health
from crdsops.runtime.backends import apacheconf
from crdsops.runtime.backends.base import (
    Backend,
    alive,
    kill,
    pids_matching,
    read_pid_file,
    run_foreground,
    wait_gone,
)
from crdsops.runtime.releases import serving_code
from crdsops.runtime.environ import child_environ, manage_argv, server_dir, server_environ

log = logging.getLogger(__name__)

# How long each command may take before it is stopped (seconds): apachectl only signals or
# forks httpd; setup-server writes files; `manage.py check` imports Django and logs in to the
# database; the access check tests paths with /bin/sh as the web user.
APACHECTL_TIMEOUT = 60

# What Apache's parent logs once a graceful restart has re-read its configuration and
# started the new generation of workers (AH00489/AH00094 "... resuming normal operations").
GRACEFUL_DONE = "resuming normal operations"
SETUP_TIMEOUT = 300
DJANGO_CHECK_TIMEOUT = 300
ACCESS_CHECK_TIMEOUT = 60

ENTRY_TEMPLATE = '''\
"""WSGI entry of {name}, written by `inv install` (crdsops.runtime.backends.modwsgi); do not edit, reinstall."""
import os
import sys

os.environ.update({environ!r})
sys.path.insert(0, {server_dir!r})

from crds_server.wsgi import application  # noqa: E402,F401
'''


# Apache's own limit on a request body, far above the JSON-RPC view's (CRDS_JSONRPC_MAX_BYTES,
# 16 MiB in server/crds_server/settings/base.py) so that Django, not Apache, answers a body over
# that with a JSON-RPC error: mod_wsgi-express's default, 10 MB, would answer an HTML 413 to
# requests the view accepts. Apache reads and discards what the view leaves unread.
APACHE_REQUEST_BODY_LIMIT = 1024 * 1024 * 1024


class ModWsgiBackend(Backend):
    """Apache + mod_wsgi, set up by mod_wsgi-express under ``<root>/apache``."""

    name = "mod_wsgi"

    # --- where things are -----------------------------------------------------------

    @staticmethod
    def server_root(config: ServerConfig) -> Path:
        return config.layout.apache

    @staticmethod
    def entry(config: ServerConfig) -> Path:
        return config.layout.wsgi_entry

    def pid_file(self, config: ServerConfig) -> Path:
        return config.layout.httpd_pid

    def log_file(self, config: ServerConfig) -> Path:
        return config.layout.apache_error_log

    def access_log(self, config: ServerConfig) -> Path:
        return config.layout.apache_access_log

    def apachectl(self, config: ServerConfig) -> Path:
        return config.layout.apachectl

    def command(self, config: ServerConfig) -> list[str]:
        return [str(self.apachectl(config)), "start"]

    def looks_like_ours(self, cmdline: str) -> bool:
        return "httpd.conf" in cmdline and ("mod_wsgi-express" in cmdline or "wsgi:" in cmdline)

    # --- install time ---------------------------------------------------------------

    def preflight(self, config: ServerConfig) -> None:
        """Read-only checks before install changes anything."""
        _express(config)
        run_as(config)
        check_readable_by_web_user(config, [serving_code(config).stack, server_dir(config), _option_file(config)])

    def prepare(self, config: ServerConfig) -> None:
        """Write the WSGI entry and generate the Apache configuration under the server root."""
        self.preflight(config)
        user = run_as(config)
        write_atomic(self.entry(config), render_entry(config), mode=0o644)
        write_atomic(config.layout.apache_include, render_include(config), mode=0o644)
        ensure_dir(config.layout.logs)
        ensure_dir(config.layout.run)
        result = commands.run(self.setup_argv(config, user), what="mod_wsgi-express setup-server", cwd=server_dir(config),
                              env=_plain_environ(), check=False, timeout=SETUP_TIMEOUT)
        if not result.ok:
            last = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise CrdsOpsError(f"mod_wsgi-express setup-server failed: {' / '.join(last)}; check web.* in the config")
        check_readable_by_web_user(config, [
            self.entry(config), config.layout.static, config.layout.references, config.layout.mappings,
            config.layout.secret_key,
        ])
        self.check_django_as_web_user(config)

    def setup_argv(self, config: ServerConfig, user: tuple[str, str] | None) -> list[str]:
        web = config.web
        obs = config.observatory
        argv = [
            str(_express(config)), "setup-server", str(self.entry(config)),
            "--server-root", str(self.server_root(config)),
            "--host", web.host, "--port", str(web.port),
            "--processes", str(max(1, web.processes)), "--threads", str(max(1, web.threads)),
            "--log-directory", str(config.layout.logs),
            "--error-log-name", self.log_file(config).name,
            "--access-log", "--access-log-name", self.access_log(config).name,
            "--pid-file", str(self.pid_file(config)),
            "--working-directory", str(server_dir(config)),
            "--python-path", str(server_dir(config)),
            "--locale", "C.UTF-8",
            "--enable-sendfile",
            "--limit-request-body", str(APACHE_REQUEST_BODY_LIMIT),
            *(["--embedded-mode"] if web.wsgi_mode == "embedded" else []),
            "--startup-timeout", str(max(15, web.start_timeout)),
            "--shutdown-timeout", str(max(5, min(web.stop_timeout, 30))),
            "--include-file", str(config.layout.apache_include),
            "--url-alias", "/static", str(config.layout.static),
            "--url-alias", f"/unchecked_get/references/{obs}", str(config.layout.references),
            "--url-alias", f"/unchecked_get/mappings/{obs}", str(config.layout.mappings),
        ]
        if user is not None:
            argv += ["--user", user[0], "--group", user[1]]
        return argv

    def check_django_as_web_user(self, config: ServerConfig) -> None:
        """``manage.py check --database default`` as the web user: imports, settings, DB login."""
        user = run_as(config)
        who = f"as {user[0]} " if user else ""
        try:
            result = commands.run(manage_argv(config, "check", "--database", "default"), what="manage.py check",
                                  cwd=server_dir(config), env=child_environ(config), check=False, timeout=DJANGO_CHECK_TIMEOUT,
                                  user=user)
        except commands.TimedOut as err:
            raise CrdsOpsError(f"the Django server cannot start {who}({err}); "
                               "fix that, then run `inv install` again") from None
        if not result.ok:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise CrdsOpsError(
                f"the Django server cannot start {who}({lines[-1] if lines else 'exit ' + str(result.returncode)}); "
                "fix that, then run `inv install` again"
            )

    # --- run time -------------------------------------------------------------------

    def start(self, config: ServerConfig) -> int:
        apachectl = self.apachectl(config)
        if not apachectl.exists():
            raise CrdsOpsError(f"{config.name} has no Apache set up at {self.server_root(config)}; run `inv install`")
        if config.database.is_mysql:
            from crdsops.db import mysql

            mysql.connection_check(config.database)
        self.pid_file(config).unlink(missing_ok=True)
        error_log = self.log_file(config)
        before = error_log.stat().st_size if error_log.exists() else 0
        try:
            result = commands.run([str(apachectl), "start"], what="apachectl start", cwd=server_dir(config),
                                  env=child_environ(config), check=False, timeout=APACHECTL_TIMEOUT)
        except commands.TimedOut as err:
            self.sweep(config)
            raise CrdsOpsError(f"{config.name}: Apache failed to start ({err}); see {error_log}") from None
        if not result.ok:
            raise CrdsOpsError(self._failure(config, "Apache failed to start", result, before))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = read_pid_file(self.pid_file(config))
            if pid is not None and alive(pid):
                return pid
            time.sleep(0.05)
        self.sweep(config)
        raise CrdsOpsError(self._failure(config, "Apache exited during start-up", result, before))

    def _failure(self, config: ServerConfig, what: str, result, log_offset: int) -> str:
        said = [line for line in (result.stderr + result.stdout).splitlines()
                if line.strip() and "setlocale" not in line]
        error_log = self.log_file(config)
        new_log = _read_from(error_log, log_offset).strip()
        parts = [f"{config.name}: {what} (apachectl exit {result.returncode})"]
        if said:
            parts.append(" / ".join(line.strip() for line in said[-4:]))
        detail = "; ".join(parts) + f"; see {error_log}"
        return detail + (f"; its last lines:\n{new_log}" if new_log else " (nothing new in it)")

    def foreground(self, config: ServerConfig) -> int:
        return run_foreground([str(self.apachectl(config)), "start", "-DFOREGROUND"],
                              cwd=server_dir(config), env=child_environ(config))

    def stop(self, config: ServerConfig, pid: int, timeout: float) -> bool:
        """``apachectl stop``, wait; then kill whatever of this Apache is left. Return whether forced."""
        try:
            commands.run([str(self.apachectl(config)), "stop"], what="apachectl stop", cwd=server_dir(config),
                         env=child_environ(config), check=False, timeout=APACHECTL_TIMEOUT)
        except commands.CommandFailed as err:  # gone or hung: the signals below stop this Apache
            log.warning(f"{err}; stopping {config.name}'s Apache by signal")
        forced = not wait_gone(pid, timeout)
        if forced:
            kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)
        return self.sweep(config) or forced

    def reload_text(self, config: ServerConfig) -> str:
        web = config.web
        return (f"generate Apache/mod_wsgi in {config.layout.apache} ({web.wsgi_mode} mode, port {web.port}, "
                f"{web.processes}x{web.threads}, as {web.user}) with the live files kept aside, run Django's "
                "system checks as the web user and `apachectl configtest` (a failure puts the live files back "
                "and refuses, nothing reloaded), then `apachectl graceful`")

    def reload(self, config: ServerConfig, pid: int) -> None:
        """Generate and check the new configuration beside the live one, then ``apachectl graceful``.

        The live files are copied aside first; a generation, a Django check or a configtest that
        fails puts them back and refuses in one line before anything is reloaded. ``graceful``
        (SIGUSR1 to the parent, whose pid stays) re-reads the configuration without closing the
        listening socket: old workers finish the requests they hold, new ones take the next.
        """
        # Embedded mode (the default, web.wsgi_mode), not daemon mode: on a graceful restart Apache
        # restarts the mod_wsgi daemons at once and every request in flight in them is reset
        # ("WSGI0147 Error reading response headers from daemon process (Connection reset by
        # peer)": 4 x 502 per rerun under 4 client threads, 12 in 3 rounds of bench/rerun.py),
        # while embedded workers finish theirs: 0 failed in 3 rounds, longest gap without an
        # answer 1.16 s (median; daemon 0.28 s; the old stop/install/run: 141542 refused or reset,
        # 2.04 s). Touch-to-reload would spare the daemons' sockets but cannot take up a new
        # httpd.conf, and daemon mode has half embedded's JSON-RPC rate (configs/defaults.yaml);
        # bench/serve.py keeps its targets in embedded mode with crdsops.conf: 2.85, 2.43, 5.45,
        # 1.67 against >= 2, 2, 2, 0.5.
        apacheconf.keep(config)
        signalled = False
        try:
            self.prepare(config)
            failpoints.hit("apache.generated")
            apacheconf.configtest(config)
            signalled = True
            self.graceful(config, pid)
        except BaseException:
            with interrupts.shielded(f"putting {config.name}'s Apache configuration back"):
                changed = apacheconf.put_back(config)
                if signalled and changed and alive(pid):  # it may have taken the new one up: the old again
                    try:
                        self._apachectl(config, "graceful")
                    except CrdsOpsError as err:  # the first cause is the error to report
                        log.warning(f"{err}; the old Apache configuration is back on disk, not taken up")
            raise
        finally:
            apacheconf.discard(config)

    def graceful(self, config: ServerConfig, pid: int) -> None:
        """``apachectl graceful``; return once the new generation of workers answers get_server_info."""
        error_log = self.log_file(config)
        offset = error_log.stat().st_size if error_log.exists() else 0
        self._apachectl(config, "graceful")
        deadline = time.monotonic() + config.web.start_timeout
        while not _said_since(error_log, offset, GRACEFUL_DONE):
            if not alive(pid):
                raise CrdsOpsError(f"{config.name}: Apache exited on its graceful restart; see {error_log}; "
                                   f"its last lines:\n{_read_from(error_log, offset)}")
            if time.monotonic() > deadline:
                raise CrdsOpsError(f"{config.name}: Apache did not finish its graceful restart within "
                                   f"{config.web.start_timeout}s; see {error_log}")
            time.sleep(0.05)
        if not health.wait_until_answers(config.local_url, max(1.0, deadline - time.monotonic()), lambda: alive(pid)):
            raise CrdsOpsError(f"{config.name} does not answer after its graceful restart; see {error_log}")

    def _apachectl(self, config: ServerConfig, action: str) -> None:
        result = commands.run([str(self.apachectl(config)), action], what=f"apachectl {action}", cwd=server_dir(config),
                              env=child_environ(config), check=False, timeout=APACHECTL_TIMEOUT)
        if not result.ok:
            raise CrdsOpsError(self._failure(config, f"apachectl {action} failed", result, 0).split("; its last")[0])

    def sweep(self, config: ServerConfig, timeout: float = 5) -> bool:
        """Kill any process still running this server's httpd.conf; return whether there was one."""
        left = processes_of(config)
        if not left:
            return False
        for pid in left:
            kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and processes_of(config):
            time.sleep(0.1)
        for pid in processes_of(config):
            kill(pid, signal.SIGKILL)
        return True


def processes_of(config: ServerConfig) -> list[int]:
    """Pids of every Apache or mod_wsgi daemon process running this server's configuration."""
    return pids_matching(f"-f {config.layout.httpd_conf} ")


def render_include(config: ServerConfig) -> str:
    """Apache directives of ours, after mod_wsgi-express's: room for a graceful restart.

    On ``apachectl graceful`` the old workers stop accepting at once but keep their scoreboard
    slots until the parent reaps them, and the parent forks the new generation on its
    once-a-second maintenance tick, into free slots only. mod_wsgi-express leaves no free slot
    (ServerLimit x ThreadsPerChild = MaxRequestWorkers = processes x threads), so the first new
    worker came ~2.1 s after the signal, then one a second: 2.2-2.8 s without an answer under 4
    client threads. With twice the slots the whole new generation starts on the first tick.
    MinSpareThreads of one worker's threads keeps Apache from filling the extra slots at rest:
    they are used during a reload, and under a load that holds every thread busy.
    (ServerLimit is read at a full start only: a server started before this takes it up at its
    next ``inv stop``/``inv run``.)
    """
    web = config.web
    processes, threads = max(1, web.processes), max(1, web.threads)
    directives = (f"ServerLimit {2 * processes}\nMaxRequestWorkers {2 * processes * threads}\n"
                  f"MinSpareThreads {threads}\nMaxSpareThreads {processes * threads}\n")
    return ("# written by `inv install` (crdsops.runtime.backends.modwsgi); do not edit, reinstall\n"
            + "".join(f"<IfModule {mpm}>\n{directives}</IfModule>\n"
                      for mpm in ("mpm_worker_module", "mpm_event_module")))


def render_entry(config: ServerConfig) -> str:
    environ = {k: v for k, v in server_environ(config).items() if k != "PYTHONPATH"}
    return ENTRY_TEMPLATE.format(name=config.name, environ=environ, server_dir=str(server_dir(config)))


# --- running as the web user -------------------------------------------------------------

def run_as(config: ServerConfig) -> tuple[str, str] | None:
    """(user, group) Apache serves as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    user, group = config.web.user, config.web.group or config.web.user
    if not user or user == "root" or group == "root":
        raise CrdsOpsError(
            f"{config.name}: Apache refuses to serve as root; set web.user and web.group to an "
            "unprivileged account (www-data on Debian) in the server's config"
        )
    try:
        pwd.getpwnam(user)
        import grp

        grp.getgrnam(group)
    except KeyError:
        raise CrdsOpsError(f"web.user {user!r} or web.group {group!r} does not exist on this machine; create it or fix the config") from None
    return user, group


_CHECK_SCRIPT = r'''
for p in "$@"; do
  kind=${p%%:*}; path=${p#*:}
  case $kind in
    x) [ -x "$path" ] || { echo "x:$path"; exit 1; } ;;
    d) { [ -r "$path" ] && [ -x "$path" ]; } || { echo "d:$path"; exit 1; } ;;
    f) [ -r "$path" ] || { echo "f:$path"; exit 1; } ;;
  esac
done
'''


def check_readable_by_web_user(config: ServerConfig, targets: list[Path]) -> None:
    """Fail naming the first directory or file that the web user cannot get through to."""
    user = run_as(config)
    if user is None:
        return
    items: list[str] = []
    for target in targets:
        target = Path(target)
        for ancestor in reversed(target.parents):
            items.append(f"x:{ancestor}")
        items.append(f"{'d' if target.is_dir() else 'f'}:{target}")
        real = target.resolve()
        if real != target:  # the stack's python is a symlink to the system one, say
            items += [f"x:{a}" for a in reversed(real.parents)] + [f"{'d' if real.is_dir() else 'f'}:{real}"]
    items = list(dict.fromkeys(items))
    result = commands.run(["/bin/sh", "-c", _CHECK_SCRIPT, "sh", *items], what=f"checking what {user[0]} can read",
                          cwd="/", check=False, timeout=ACCESS_CHECK_TIMEOUT, user=user)
    if result.ok:
        return
    kind, _, path = result.stdout.strip().partition(":")
    if kind == "f" and config.database.is_mysql and Path(path) == Path(config.database.option_file or ""):
        fix = f"`chown {user[0]} {path}` (keep it mode 0600; root can still read it)"
    elif kind == "f":
        fix = f"`chmod o+r {path}`, or install from a place {user[0]} can read"
    else:
        fix = (f"`chmod o+x {path}` (o+rx if it must be listed), or put the checkout, stack and "
               f"option file under a directory {user[0]} can enter")
    what = {"x": "cannot enter the directory", "d": "cannot read the directory"}.get(kind, "cannot read")
    raise CrdsOpsError(f"Apache serves {config.name} as {user[0]}, who {what} {path}; fix: {fix}")


def _option_file(config: ServerConfig) -> Path:
    if not config.database.is_mysql:
        return config.stack.prefix
    from crdsops.db import mysql

    return mysql.option_file(config.database)


def _express(config: ServerConfig) -> Path:
    stack = serving_code(config).stack
    express = stack / "bin" / "mod_wsgi-express"
    if not express.exists():
        raise CrdsOpsError(f"no mod_wsgi-express in the stack {stack}; add the vm category with `inv build --vm`")
    return express


def _plain_environ() -> dict:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.setdefault("LANG", "C.UTF-8")
    return env


def _said_since(path: Path, offset: int, marker: str) -> bool:
    """Whether ``marker`` is in what Apache wrote to its error log since ``offset``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return marker.encode() in handle.read()
    except OSError:
        return False


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read(64 * 1024).decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-15:])
