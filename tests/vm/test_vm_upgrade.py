"""`inv upgrade` and its automatic rollback on hst dev behind Apache/mod_wsgi with MariaDB, under load.

The module's server (conftest.py's ``vm``) takes its upgrades from a git repository the test
makes (tests/releasekit.py); a client loop of real requests (tests/clientload.py, no retry)
runs across each upgrade and counts refused, reset and 5xx.
"""

from __future__ import annotations

import json

import pytest
from clientload import ClientLoad
from releasekit import make_repo, release_config
from support import make_configs
from vmkinds import requires_vm_services, running_dev

from crdsops.runtime import health

pytestmark = requires_vm_services


@pytest.fixture(scope="module")
def serving(vm):
    repo = make_repo(vm.where)
    make_configs(vm.where, {("hst", "dev"): release_config(repo)})
    with running_dev(vm) as cfg:
        vm.cfg = cfg
        yield vm


def served(vm) -> dict:
    return health.rpc(vm.cfg.local_url, "get_server_info")


def test_upgrade_under_load_refuses_nothing_and_serves_the_new_release(serving):
    with ClientLoad(serving.cfg.local_url, "hst", threads=4) as load:
        result = serving.inv("upgrade", "--to", "good", "--yes", timeout=900)
    assert load.failed == 0, load.describe()
    assert len(load.requests) > 50, load.describe()
    assert "reloaded gracefully" in result.stdout, result.stdout
    info = served(serving)
    current = json.loads(serving.inv("releases", "--json").stdout)["current"]
    assert info["max_headers_per_rpc"] == 501 and info["crdsops_release"] == current
    httpd = (serving.cfg.root / "apache" / "httpd.conf").read_text()
    assert f"releases/{current}/server" in httpd, "Apache does not serve the release's code"


def test_a_failure_after_the_switch_rolls_back_under_load(serving):
    before = json.loads(serving.inv("releases", "--json").stdout)["current"]
    env = dict(serving.env, CRDSOPS_FAILPOINT="upgrade.reloaded=fail")
    with ClientLoad(serving.cfg.local_url, "hst", threads=4) as load:
        result = serving.inv("upgrade", "--to", "base", "--yes", check=False, timeout=900, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert load.failed == 0, load.describe()
    assert f"switched back: {before} serves" in result.stderr, result.stderr
    assert served(serving)["crdsops_release"] == before and served(serving)["max_headers_per_rpc"] == 501
