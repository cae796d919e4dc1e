"""``inv run``, ``inv stop``, ``inv rerun``: the operations on a server's running state.

Each puts the server back as it was (up or down) when it fails or is interrupted
(``service.kept_as_it_was``); the outcome is the server's pid afterwards.
"""

from __future__ import annotations

import logging

from crdsops.config.model import ServerConfig
from crdsops.runtime import install, service
from crdsops.runtime.backends import backend_for
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import ServiceOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)


def outcome(config: ServerConfig) -> ServiceOutcome:
    """The server's state after a run, stop or rerun."""
    pid = service.running_pid(config)
    return ServiceOutcome(pid, config.local_url if pid else "")


class _Serving(Operation):
    """An operation on the running state: put back as it was when it fails; the pid afterwards is its outcome."""

    def run(self, plan: Plan) -> ServiceOutcome:
        with service.kept_as_it_was(self.config):
            plan.run()
        return self.outcome()

    def outcome(self) -> ServiceOutcome:
        return outcome(self.config)


class Start(_Serving):
    """``inv run`` (in the background): start it unless it runs."""

    task = "run"
    quiet_plan = True

    def probe(self) -> int | None:
        return service.running_pid(self.config)

    def plan(self, pid: int | None) -> Plan:
        config = self.config
        p = Plan(f"starting {config.name}")
        if pid is not None:
            said = f"{config.name} is already running (pid {pid}) at {config.local_url}; nothing started"
            p.add(said, lambda: log.info(said))
        else:
            p.add(f"start it at {config.local_url} and wait until get_server_info answers", lambda: service.start(config),
                  name="starting the server")
        return p


class Stop(Start):
    """``inv stop``: gracefully, then forcefully after ``web.stop_timeout``."""

    task = "stop"

    def plan(self, pid: int | None) -> Plan:
        p = Plan(f"stopping {self.config.name}")
        p.add(f"stop it (pid {pid})" if pid else "stop what is left of it (not running)",
              lambda: service.stop(self.config), name="stopping the server")
        return p


class Rerun(_Serving):
    """``inv rerun``: reinstall (same identity) and take the new code and configuration up.

    When the server runs, everything that can be done while it serves is done first, then the
    backend reloads it (``Backend.reload``: Apache's graceful, or a restart where nothing better
    exists, which the plan says); a failure leaves the old server serving. Not running: install,
    then start.
    """

    task = "rerun"

    def probe(self) -> tuple[int | None, install.InstallFacts]:
        return service.running_pid(self.config), install.probe(self.config)

    def plan(self, facts) -> Plan:
        pid, install_facts = facts
        if pid is None:
            return self._plan_start(install_facts)
        config = self.config
        backend = backend_for(config)
        p = Plan(f"rerunning {config.name}")
        p.extend(install.plan(config, install_facts, while_serving=True))
        if backend.graceful:
            p.add(f"reload (graceful): {backend.reload_text(config)}; pid {pid} keeps serving, its listening "
                  f"socket stays open and requests in flight finish; wait until get_server_info answers",
                  lambda: service.reload(config, pid), name="reloading the server")
        else:
            p.add(f"restart (the server does not answer for a moment): {backend.name} has no graceful reload; "
                  f"stop it (pid {pid}), start it at {config.local_url} and wait until get_server_info answers",
                  lambda: service.reload(config, pid), name="restarting the server")
        return p

    def _plan_start(self, install_facts: install.InstallFacts) -> Plan:
        config = self.config
        p = Plan(f"rerunning {config.name}")
        p.add("nothing to stop (not running)")
        p.extend(install.plan(config, install_facts))
        p.add(f"start it at {config.local_url} and wait until get_server_info answers",
              lambda: service.start(config), name="starting the server")
        return p
