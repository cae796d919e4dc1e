"""`inv fleet-upgrade` over real sshd "VMs" (tests/vms.py): tier order, gates, ops untouched.

hst dev (127.0.0.3) runs; hst test (127.0.0.2) is installed (both seeded) but stopped, so its gate (`inv
runtests`) fails after its upgrade; hst ops (127.0.0.4) has no sshd at all: any attempt to
reach it would show as UNREACHABLE. Upgrades come from a repository the test makes
(tests/releasekit.py).
"""

from __future__ import annotations

import pytest
from releasekit import make_repo, release_config
from vms import Fleet

from crdsops.runtime import health


@pytest.fixture(scope="module")
def rollout_fleet(tmp_path_factory):
    where = tmp_path_factory.mktemp("rollout")
    repo = make_repo(where)
    fl = Fleet(where, extra={"test": release_config(repo), "dev": release_config(repo)})
    try:
        for kind in ("dev", "test"):  # a catalog for the smoke tests and self-tests to read
            fl.ops[kind].inv("install", "--obs", "hst", "--kind", kind)
            fl.ops[kind].inv("manage", "--", "seed_demo")
        fl.ops["dev"].inv("run")
        yield fl
    finally:
        fl.close()


def accepted(fleet) -> dict[str, int]:
    """kind -> the SSH connections its "VM"'s sshd has authenticated so far (ops has no sshd)."""
    return {"test": fleet.test_host.accepted(), "dev": fleet.dev_host.accepted()}


def test_dry_run_shows_the_tiers_in_order_and_changes_nothing(rollout_fleet):
    before = accepted(rollout_fleet)
    result = rollout_fleet.inv("fleet-upgrade", "--obs", "hst", "--to", "good", "--dry-run", timeout=600)
    after = accepted(rollout_fleet)
    out = result.stdout
    assert out.index("  - dev:") < out.index("  - test:") < out.index("  - ops:"), out
    assert "dev gate" in out and "test gate" in out and "ops gate" not in out, out
    # each host's own plan (`inv upgrade --to good --dry-run`, its probes run for real there)
    assert "dev probe: hst.dev" in out and "test probe: hst.test" in out, out
    assert "    hst.dev| plan for upgrading hst.dev to " in out, out
    assert result.returncode == 1, out + result.stderr  # hst.ops cannot be reached: the rollout would stop there
    assert "UNREACHABLE" in next(ln for ln in out.splitlines() if ln.startswith("ops probe:")), out
    assert "cannot reach" in result.stderr and "hst.ops" in result.stderr, result.stderr
    dev = rollout_fleet.ops["dev"].config("hst", "dev")
    assert not (dev.root / "releases").exists(), "a dry run made a release"
    assert {k: after[k] - before[k] for k in after} == {"test": 1, "dev": 1}, (before, after)


def test_a_failed_gate_on_test_stops_the_rollout_before_ops(rollout_fleet):
    before = accepted(rollout_fleet)
    result = rollout_fleet.inv("fleet-upgrade", "--obs", "hst", "--to", "good", "--yes", timeout=1500)
    after = accepted(rollout_fleet)
    # dev: its upgrade and its gate; test: its upgrade and its failed gate: one connection each
    assert {k: after[k] - before[k] for k in after} == {"test": 1, "dev": 1}, (before, after)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hst.test" in result.stderr and "failed its gate on the test tier" in result.stderr, result.stderr
    assert "not touched: the ops tier" in result.stderr, result.stderr
    assert "dev gate: hst.dev" in result.stdout and "ok" in result.stdout, result.stdout
    touched_ops = [line for line in result.stdout.splitlines() if line.startswith("ops")]
    assert not touched_ops, f"the rollout reached the ops tier: {touched_ops}"
    dev = rollout_fleet.ops["dev"].config("hst", "dev")
    assert health.rpc(dev.local_url, "get_server_info")["max_headers_per_rpc"] == 501, "dev does not serve the upgrade"
