"""`inv rerun`'s plan as data: while the server runs, install beside it, then reload (or say it restarts)."""

from __future__ import annotations

import pytest
from support import make_configs

from crdsops.config.loader import load_config
from crdsops.runtime import serving
from crdsops.runtime.backends.base import Backend
from crdsops.runtime.backends.modwsgi import ModWsgiBackend
from crdsops.runtime.backends.runserver import RunserverBackend
from crdsops.runtime.install import InstallFacts

FACTS = InstallFacts(installed=None, owner=None)


class NoGracefulBackend(RunserverBackend):
    """A web server with nothing better than the base restart."""

    reload = Backend.reload


@pytest.fixture
def configs(tmp_path):
    return make_configs(tmp_path, {("hst", "dev"): {"root": str(tmp_path / "hst-dev")},
                                   ("hst", "django"): {"root": str(tmp_path / "hst-django")}})


def lines(config, pid):
    return [step.text for step in serving.Rerun(config).plan((pid, FACTS)).steps]


def test_running_mod_wsgi_installs_while_serving_then_reloads_gracefully(configs):
    config = load_config("hst", "dev", configs)
    steps = lines(config, 4321)
    assert not any("stop" in line for line in steps), steps
    assert any("additive" in line for line in steps[:-1]), steps
    assert steps[-1].startswith("reload (graceful): generate Apache/mod_wsgi"), steps
    assert "apachectl configtest" in steps[-1] and "apachectl graceful" in steps[-1] and "4321" in steps[-1]
    assert not any(line.startswith("generate Apache") for line in steps), "Apache generated in place before the check"


def test_a_backend_without_graceful_reload_says_it_restarts(configs, monkeypatch):
    config = load_config("hst", "django", configs)
    monkeypatch.setattr(serving, "backend_for", lambda _config: NoGracefulBackend())
    steps = lines(config, 4321)
    assert steps[-1].startswith("restart (the server does not answer for a moment)"), steps
    assert "stop it (pid 4321)" in steps[-1]
    assert any(line.startswith("run Django's system checks") for line in steps), steps


def test_graceful_is_whether_a_backend_has_a_reload_of_its_own():
    assert ModWsgiBackend().graceful
    assert not NoGracefulBackend().graceful


def test_not_running_installs_and_starts(configs):
    config = load_config("hst", "dev", configs)
    steps = lines(config, None)
    assert steps[0] == "nothing to stop (not running)"
    assert any(line.startswith("generate Apache/mod_wsgi") for line in steps), steps
    assert steps[-1].startswith(f"start it at {config.local_url}")
