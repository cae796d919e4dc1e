"""The logs' rotation: the logrotate configuration ``inv install`` writes, and ``inv rotate-logs``.

``<root>/logrotate.conf`` rotates every ``*.log`` under ``<root>/logs`` daily, compressed, dated,
for ``logs.keep_days`` days; ``inv rotate-logs`` runs Debian's ``logrotate`` on it with a state
file of this server's own (``Layout.logrotate_state``), so no system-wide configuration is
needed and two servers on one machine never share one. How the server takes up a new log
without refusing a request:

- Apache (mod_wsgi kinds): rename, then ``apachectl graceful`` (the parent reopens its logs and
  keeps its listening socket; old workers finish their requests, still writing the old file,
  hence ``delaycompress``). Only when Apache runs: a graceful on a stopped Apache starts it.
- the django kind: ``copytruncate``, since the dev server writes to the fd it inherited from
  ``inv run``; it opens the server log with O_APPEND, so it goes on at the new end. A line
  written between the copy's end and the truncation would be lost, so new requests are held
  (``Layout.hold``, as a swap holds them: they wait, nothing is refused) from ``DRAIN`` seconds
  before the copy until the truncation; the requests already past the hold write theirs first.
- the cron jobs' logs (backup, check-cache, boot, rotate-logs): rename; each run's ``>>`` opens
  the name anew.

``audit.jsonl`` is not a ``*.log``: never rotated, copied or truncated (``inv history`` reads it
whole, and a truncation would lose the lines written between the copy and the truncate).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import write_atomic
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import RotateOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)

SBIN = ("/usr/sbin", "/sbin")  # where Debian puts logrotate; cron's PATH is /usr/bin:/bin
LOGROTATE_TIMEOUT = 1800  # compressing a year of Apache logs on a slow disk
# %s too: a second rotation on one day (-f, or a missed night caught up) gets a name of its own
DATEFORMAT = "-%Y%m%d-%s"
HOLD_TOKEN = "logrotate"  # what the django kind's hold file says while the server log is copied and truncated
DRAIN = 0.2  # seconds after the hold appears: the requests already past it write their lines


def _block(paths: list[Path], config: ServerConfig, *extra: str) -> str:
    days = config.logs.keep_days
    directives = ["daily", f"rotate {days}", f"maxage {days}", "missingok", "notifempty", "compress",
                  "delaycompress", "dateext", f"dateformat {DATEFORMAT}", *extra]
    names = " ".join(_quoted(p) for p in paths)
    return names + " {\n" + "".join(f"    {d}\n" for d in directives) + "}\n"


def _quoted(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def render(config: ServerConfig) -> str:
    layout = config.layout
    head = (f"# {config.name}: written by `inv install` (crdsops.runtime.logrotation); do not edit, reinstall.\n"
            f"# `inv rotate-logs` runs it (state: {layout.logrotate_state}); {layout.audit_log.name} is never "
            "rotated.\n")
    if config.web.server == "mod_wsgi":
        pid, apachectl = shlex.quote(str(layout.httpd_pid)), shlex.quote(str(layout.apachectl))
        server = _block([layout.apache_error_log, layout.apache_access_log], config, "sharedscripts",
                        "postrotate\n"
                        f"        pid=$(cat {pid} 2>/dev/null) && kill -0 \"$pid\" 2>/dev/null || exit 0\n"
                        f"        {apachectl} graceful\n"
                        "    endscript")
    else:
        hold = shlex.quote(str(layout.hold))
        # copytruncate loses what the server writes between the copy's end and the truncation;
        # requests held (not refused) for that moment write nothing. $PPID is logrotate's pid in
        # both scripts: the hold is removed only when it is still ours (a swap's is left alone).
        server = _block([layout.server_log], config, "copytruncate",
                        "prerotate\n"
                        f"        (set -C; echo \"{HOLD_TOKEN} $PPID\" > {hold}) 2>/dev/null && sleep {DRAIN} || true\n"
                        "    endscript",
                        "postrotate\n"
                        f"        [ \"$(cat {hold} 2>/dev/null)\" = \"{HOLD_TOKEN} $PPID\" ] && rm -f {hold} || true\n"
                        "    endscript")
    # the rest: the cron jobs' logs and any other *.log. The glob matches the server's logs too;
    # ignoreduplicates (global: inside the block logrotate still refuses the duplicate) leaves
    # them to the block above, which comes first
    rest = _block([layout.logs / "*.log"], config)
    return head + "ignoreduplicates\n" + server + rest


def write(config: ServerConfig) -> bool:
    """Write the configuration into the server root; return whether it changed.

    0644 and owned by whoever installs: logrotate run as root refuses a configuration that
    others may write."""
    path = config.layout.logrotate_conf
    changed = write_atomic(path, render(config), mode=0o644)
    log.info(f"logrotate configuration: {'written' if changed else 'unchanged'} {path}")
    return changed


def logrotate() -> str:
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which("logrotate", path=path) or "logrotate"


def argv(config: ServerConfig, force: bool = False) -> list[str]:
    layout = config.layout
    return [logrotate(), *(["--force"] if force else []), "--state", str(layout.logrotate_state),
            str(layout.logrotate_conf)]


def release_hold(config: ServerConfig) -> None:
    """Remove a hold a logrotate left behind (killed between its two scripts); the server would
    otherwise hold each request for up to ``web.hold_timeout`` until the file goes stale."""
    hold = config.layout.hold
    try:
        word, _, pid = hold.read_text().strip().partition(" ")
    except OSError:
        return
    if word == HOLD_TOKEN and pid.isdigit() and not Path(f"/proc/{pid}").exists():
        hold.unlink(missing_ok=True)
        log.warning(f"removed the hold {hold} that logrotate (pid {pid}) left behind")


@dataclass(frozen=True)
class RotateFacts:
    configured: bool  # the configuration exists (inv install writes it)
    logs: tuple[str, ...]  # the logs it finds now


class RotateLogs(Operation):
    """``inv rotate-logs``: logrotate on this server's configuration (``--force``: rotate now).

    It holds no server lock: rotating does not touch what a backup, restore or mirror works on,
    and the nightly run must not be refused while one of them holds the lock. logrotate locks
    its own state file against a second run."""

    task = "rotate-logs"

    def __init__(self, config: ServerConfig, force: bool = False):
        super().__init__(config)
        self.force = force
        self.done = False

    @property
    def locks(self) -> None:
        return None

    def probe(self) -> RotateFacts:
        logs = self.config.layout.logs
        names = tuple(sorted(p.name for p in logs.glob("*.log"))) if logs.is_dir() else ()
        return RotateFacts(self.config.layout.logrotate_conf.is_file(), names)

    def plan(self, facts: RotateFacts) -> Plan:
        layout = self.config.layout
        p = Plan(f"rotating the logs of {self.config.name}")
        if not facts.configured:
            p.problems.append(f"no logrotate configuration at {layout.logrotate_conf}; run `inv install` (or `inv rerun`)")
            return p
        when = "now (--force)" if self.force else "those due (daily)"
        p.add(f"rotate {when}: {', '.join(facts.logs) or 'no logs yet'} in {layout.logs} "
              f"({' '.join(argv(self.config, self.force))})", self._rotate, name="rotating the logs")
        return p

    def _rotate(self) -> None:
        try:
            commands.run(argv(self.config, self.force), what="logrotate", timeout=LOGROTATE_TIMEOUT)
        except commands.NotInstalled:
            raise CrdsOpsError("logrotate is not installed; `apt-get install logrotate` (system-packages.txt, "
                               "default)") from None
        finally:
            release_hold(self.config)
        self.done = True
        log.info(f"logs of {self.config.name} rotated ({self.config.layout.logs})")

    def outcome(self) -> RotateOutcome:
        return RotateOutcome(self.force, self.done)
