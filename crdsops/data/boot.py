"""``inv boot enable|disable|status``: whether the installed server starts when its machine boots.

Where systemd runs (PID 1 is systemd: ``/run/systemd/system`` exists), ``systemctl enable`` of the
unit ``inv install`` wrote into the server root (``crdsops.runtime.unitfile``), which links it
into ``/etc/systemd/system`` and wants it from ``multi-user.target``; ``disable`` undoes both.
Where it does not (a container, a machine without an init that reads units) an ``@reboot`` line in
the crontab runs ``inv run`` at boot, kept as the nightly lines are (``crdsops.data.schedule``:
one line per server, recognised by ``# crdsops boot <obs>.<kind>``), its output in
``logs/boot.log``. Both are idempotent; each run says which of the two it used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.data import schedule
from crdsops.errors import CrdsOpsError
from crdsops.runtime import unitfile
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import BootOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)

SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists only when systemd is PID 1 (sd_booted(3))
SYSTEMCTL_TIMEOUT = 60


def systemd_runs() -> bool:
    return SYSTEMD_RUNTIME.is_dir()


def reboot_line(config: ServerConfig) -> str:
    command = schedule.task_command(["run"], config.layout.boot_log)
    return schedule.checked_line(f"@reboot {command} {schedule.marker(config, 'boot')}")


def _systemctl(*args: str, check: bool = True) -> commands.Result:
    return commands.run(["systemctl", *args], what=f"systemctl {args[0]}", timeout=SYSTEMCTL_TIMEOUT, check=check)


@dataclass(frozen=True)
class BootFacts:
    systemd: bool  # systemd runs here: the unit; else the @reboot line
    enabled: bool
    unit_written: bool  # inv install wrote the unit into the server root
    crontab: tuple[str, ...] = ()  # the crontab's lines (where systemd does not run)

    @property
    def how(self) -> str:
        return "systemd" if self.systemd else "cron"


def probe(config: ServerConfig) -> BootFacts:
    written = unitfile.unit_path(config).is_file()
    if systemd_runs():
        state = _systemctl("is-enabled", unitfile.unit_name(config), check=False).stdout.strip()
        return BootFacts(True, state in ("enabled", "enabled-runtime"), written)
    lines = tuple(schedule.read_crontab())
    mine = schedule.marker(config, "boot")
    return BootFacts(False, any(each.rstrip().endswith(mine) for each in lines), written, lines)


def describe(config: ServerConfig, facts: BootFacts) -> str:
    """One line for ``inv boot status`` and ``inv status``."""
    if facts.systemd:
        state = "enabled" if facts.enabled else "disabled"
        return f"boot start: {state} (systemd unit {unitfile.unit_name(config)})"
    return f"boot start: {'enabled' if facts.enabled else 'disabled'} (cron @reboot line; systemd does not run here)"


class Boot(Operation):
    """``inv boot enable`` / ``inv boot disable``."""

    task = "boot"

    def __init__(self, config: ServerConfig, enable: bool):
        super().__init__(config)
        self.enable = enable
        self.facts: BootFacts | None = None
        self.changed = False

    def probe(self) -> BootFacts:
        self.facts = probe(self.config)
        return self.facts

    def plan(self, facts: BootFacts) -> Plan:
        verb = "enabling" if self.enable else "disabling"
        p = Plan(f"{verb} the start at boot of {self.config.name}")
        if facts.systemd:
            self._plan_systemd(p, facts)
        else:
            self._plan_cron(p, facts)
        return p

    def _plan_systemd(self, p: Plan, facts: BootFacts) -> None:
        name, path = unitfile.unit_name(self.config), unitfile.unit_path(self.config)
        if self.enable and not facts.unit_written:
            p.problems.append(f"no systemd unit at {path}; run `inv install` (or `inv rerun`) first")
        elif self.enable and facts.enabled:
            p.add(f"systemd runs here: {name} is already enabled; nothing to do")
        elif self.enable:
            p.add(f"systemd runs here: systemctl enable {path} (links it into /etc/systemd/system, wanted by "
                  "multi-user.target)", lambda: self._do(["enable", str(path)], f"enabled {name}"),
                  name="enabling the unit")
        else:
            p.add(f"systemd runs here: systemctl disable {name} (removes its links from /etc/systemd/system)",
                  lambda: self._do(["disable", name], f"disabled {name}"), name="disabling the unit")

    def _plan_cron(self, p: Plan, facts: BootFacts) -> None:
        mine = schedule.marker(self.config, "boot")
        others = [each for each in facts.crontab if not each.rstrip().endswith(mine)]
        why = "systemd does not run here (no /run/systemd/system)"
        if self.enable:
            line = reboot_line(self.config)
            if others + [line] == list(facts.crontab):
                p.add(f"{why}: the @reboot line is already installed: {line}")
            else:
                p.add(f"{why}: install the crontab line {line}",
                      lambda: self._crontab(others + [line], f"installed: {line}"), name="installing the @reboot line")
        elif facts.enabled:
            p.add(f"{why}: remove the @reboot line of {self.config.name} from the crontab",
                  lambda: self._crontab(others, "removed the @reboot line"), name="removing the @reboot line")
        else:
            p.add(f"{why}: no @reboot line for {self.config.name} in the crontab; nothing to do")

    def _do(self, args: list[str], said: str) -> None:
        result = _systemctl(*args, check=False)
        if not result.ok:
            raise CrdsOpsError(f"systemctl {' '.join(args)} failed: {result.last_error_line()}")
        self.changed = True
        log.info(said)

    def _crontab(self, lines: list[str], said: str) -> None:
        schedule.write_crontab(lines)
        self.changed = True
        log.info(said)

    def outcome(self) -> BootOutcome:
        facts = self.facts
        if facts is None:
            return BootOutcome(self.enable, "", "", False)
        enabled = self.enable if self.changed else facts.enabled
        what = unitfile.unit_name(self.config) if facts.systemd else (reboot_line(self.config) if enabled else "")
        return BootOutcome(enabled, facts.how, what, self.changed)
