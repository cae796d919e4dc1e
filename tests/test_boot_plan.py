"""`inv boot` where systemd runs, as a table: given what systemctl answers, these commands.

(This machine has no systemd as PID 1: tests/backup/test_boot.py runs the cron side for real.)"""

from __future__ import annotations

import pytest
from support import make_configs

from crdsops import commands
from crdsops.config.loader import load_config
from crdsops.data import boot
from crdsops.runtime import unitfile

OK = commands.Result((), 0)


@pytest.fixture
def with_systemd(tmp_path, monkeypatch):
    runtime = tmp_path / "run-systemd-system"
    runtime.mkdir()
    monkeypatch.setattr(boot, "SYSTEMD_RUNTIME", runtime)
    cfg = load_config("hst", "dev", make_configs(tmp_path, {("hst", "dev"): {"root": str(tmp_path / "hst-dev")}}))
    cfg.root.mkdir()
    return cfg


def run_boot(cfg, enable: bool) -> boot.Boot:
    op = boot.Boot(cfg, enable)
    plan = op.plan(op.probe())
    assert not plan.problems, plan.problems
    plan.run()
    return op


def test_enable_links_and_enables_the_unit_install_wrote(with_systemd):
    cfg = with_systemd
    unitfile.write(cfg)
    with commands.fake({r"^systemctl is-enabled crds-hst-dev\.service$": commands.Result((), 1, "disabled\n"),
                        r"^systemctl enable ": OK}) as calls:
        op = run_boot(cfg, True)
    assert calls[-1] == ("systemctl", "enable", str(cfg.root / "crds-hst-dev.service"))
    assert op.outcome().enabled and op.outcome().how == "systemd" and op.outcome().changed


def test_enable_when_enabled_runs_nothing_and_disable_undoes_it(with_systemd):
    cfg = with_systemd
    unitfile.write(cfg)
    with commands.fake({r"^systemctl is-enabled ": commands.Result((), 0, "enabled\n")}) as calls:
        op = run_boot(cfg, True)
    assert len(calls) == 1 and op.outcome().enabled and not op.outcome().changed
    with commands.fake({r"^systemctl is-enabled ": commands.Result((), 0, "enabled\n"),
                        r"^systemctl disable crds-hst-dev\.service$": OK}) as calls:
        op = run_boot(cfg, False)
    assert calls[-1] == ("systemctl", "disable", "crds-hst-dev.service") and not op.outcome().enabled


def test_enable_without_the_unit_refuses(with_systemd):
    with commands.fake({r"^systemctl is-enabled ": commands.Result((), 1, "")}):
        op = boot.Boot(with_systemd, True)
        plan = op.plan(op.probe())
    assert plan.problems and "inv install" in plan.problems[0]
