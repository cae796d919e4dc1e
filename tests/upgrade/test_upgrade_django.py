"""`inv upgrade`, `inv rollback`, `inv releases` on a running hst django server (runserver, SQLite).

One module-wide server whose upgrades come from a git repository the test makes
(tests/releasekit.py: base, good, migrated, destructive, broken). The tests run in file order,
each from the state the one before left: the first upgrade adopts the running code as the
first release. Client loops (tests/clientload.py: the real crds client's requests, no retry)
count what failed while an upgrade or its automatic rollback ran.
"""

from __future__ import annotations

import json

import pytest
from clientload import ClientLoad
from releasekit import make_repo, release_config
from support import Ops, deep_merge, local_overrides, make_configs

from crdsops.runtime import health


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    where = tmp_path_factory.mktemp("upgrade")
    repo = make_repo(where)
    ops = Ops(where, make_configs(where, {("hst", "django"): deep_merge(local_overrides(where), release_config(repo))}))
    ops.inv("install", "--obs", "hst", "--kind", "django")
    ops.inv("run")
    ops.cfg = ops.config("hst", "django")
    try:
        yield ops
    finally:
        ops.inv("stop", check=False)


def info(ops) -> dict:
    return health.rpc(ops.cfg.local_url, "get_server_info")


def listing(ops) -> dict:
    return json.loads(ops.inv("releases", "--json").stdout)


def test_before_any_upgrade_the_checkout_serves(server):
    assert "no releases yet" in server.inv("releases").stdout
    assert info(server)["crdsops_release"] == ""
    plan = server.inv("upgrade", "--to", "good", "--dry-run").stdout
    assert "adopt the code serving now" in plan and "smoke-test" in plan, plan
    assert not (server.cfg.root / "releases").exists(), "a dry run made a release"


def test_upgrade_under_load_serves_the_new_code_and_refuses_nothing(server):
    with ClientLoad(server.cfg.local_url, "hst", threads=4) as load:
        result = server.inv("upgrade", "--to", "good", "--yes", timeout=600)
    assert load.failed == 0, load.describe()
    assert len(load.requests) > 50, load.describe()
    served = info(server)
    assert served["max_headers_per_rpc"] == 501, "the new release's code does not serve"
    doc = listing(server)
    names = [item["release"]["name"] for item in doc["releases"]]
    assert len(names) == 2 and doc["current"] == names[1] == served["crdsops_release"], doc
    assert doc["releases"][0]["release"]["adopted"], "the running code was not adopted as the first release"
    assert doc["releases"][1]["switched_in"][-1]["task"] == "upgrade", doc
    assert "smoke test on" in result.stdout and "(sha1s checked), best" in result.stdout, result.stdout
    env_sh = (server.cfg.root / "env.sh").read_text()
    assert f"releases/{names[1]}/server" in env_sh, env_sh
    status = json.loads(server.inv("status", "--json").stdout)
    assert status["release"]["name"] == names[1], status.get("release")


def test_a_release_that_does_not_import_is_refused_before_the_switch(server):
    before = listing(server)
    result = server.inv("upgrade", "--to", "broken", "--yes", check=False, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken refused at preflight" in result.stderr and "broken on purpose" in result.stderr, result.stderr
    assert f"nothing was switched: {before['current']} serves" in result.stderr, result.stderr
    after = listing(server)
    assert after["current"] == before["current"] and len(after["releases"]) == len(before["releases"]), after
    assert info(server)["max_headers_per_rpc"] == 501


def test_a_failure_after_the_switch_switches_back_and_refuses_nothing(server):
    before = listing(server)["current"]
    env = dict(server.env, CRDSOPS_FAILPOINT="upgrade.reloaded=fail")
    with ClientLoad(server.cfg.local_url, "hst", threads=4) as load:
        result = server.inv("upgrade", "--to", "base", "--yes", check=False, timeout=600, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert load.failed == 0, load.describe()
    assert f"switched back: {before} serves" in result.stderr, result.stderr
    assert listing(server)["current"] == before
    assert info(server)["crdsops_release"] == before and info(server)["max_headers_per_rpc"] == 501


@pytest.mark.parametrize("failpoint, signal_name, code", [
    ("upgrade.switching=sigint", "SIGINT", 130),  # Ctrl-C just before the switch
    ("upgrade.switched=sigterm", "SIGTERM", 143),  # a kill just after it, before the reload
])
def test_an_interrupt_leaves_the_old_release_serving(server, failpoint, signal_name, code):
    before = listing(server)
    env = dict(server.env, CRDSOPS_FAILPOINT=failpoint)
    with ClientLoad(server.cfg.local_url, "hst", threads=2) as load:
        result = server.inv("upgrade", "--to", "base", "--yes", check=False, timeout=600, env=env)
    assert result.returncode == code, f"{signal_name}: {result.stdout}{result.stderr}"
    assert load.failed == 0, load.describe()
    after = listing(server)
    assert after["current"] == before["current"] and len(after["releases"]) == len(before["releases"]), after
    assert info(server)["crdsops_release"] == before["current"]


def test_rollback_under_load_goes_back_to_the_previous_release(server):
    doc = listing(server)
    adopted = doc["releases"][0]["release"]["name"]
    with ClientLoad(server.cfg.local_url, "hst", threads=4) as load:
        server.inv("rollback", "--yes", timeout=600)
    assert load.failed == 0, load.describe()
    assert listing(server)["current"] == adopted
    assert info(server)["crdsops_release"] == adopted and info(server)["max_headers_per_rpc"] == 500
    assert listing(server)["releases"][0]["switched_in"][-1]["task"] == "rollback"


def test_a_destructive_migration_is_refused_at_preflight(server):
    server.inv("upgrade", "--to", "migrated", "--yes", timeout=600)
    current = listing(server)["current"]
    result = server.inv("upgrade", "--to", "destructive", "--yes", check=False, timeout=600)
    assert result.returncode == 1
    assert "Remove field note from catalogfile" in result.stderr and "--allow-destructive" in result.stderr, result.stderr
    assert listing(server)["current"] == current


def test_rollback_past_a_migration_is_refused_naming_it(server):
    current = listing(server)["current"]
    result = server.inv("rollback", "--yes", check=False, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "catalog.0002_catalogfile_note" in result.stderr, result.stderr
    assert listing(server)["current"] == current

