"""Fleet tasks at scale, over real sshd "VMs": `--parallel N` hosts at a time, and a per-host
`--timeout` that reports a hung host as TIMEOUT while the others finish.

Three hosts (hst test, dev, ops on 127.0.0.21-23), each with its own sshd and its own crdsops
checkout, whose `.venv/bin/inv` is a script: it logs when it starts and ends (one shared log,
so the test can count how many hosts worked at once), sleeps a little and answers; while a
file `hang` sits in its checkout it hangs instead, as a host whose `inv` is stuck on a dead
NFS mount or a lock would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sshd import SshLab
from support import CHECKOUT, INV, make_configs
from vms import vm_overrides

KINDS = {"test": "127.0.0.21", "dev": "127.0.0.22", "ops": "127.0.0.23"}
FAKE_INV = """#!/bin/sh
# this host's `inv`: log start and end in the shared log; hang while ./hang exists
here=$(pwd)
printf 'start {name} %s\\n' "$(date +%s.%N)" >> {log}
if [ -e "$here/hang" ]; then
    echo $$ >> "$here/hung.pid"
    exec sleep 300
fi
sleep {seconds}
printf 'end {name} %s\\n' "$(date +%s.%N)" >> {log}
echo "{name} ran inv $*"
"""


class FakeFleet:
    def __init__(self, where: Path, seconds: float = 1.0):
        self.where = where
        self.lab = SshLab(where / "ssh")
        self.log = where / "inv.log"
        self.checkouts = {}
        self.hosts = {}
        overrides = {}
        for kind, address in KINDS.items():
            host = self.hosts[kind] = self.lab.host(address)
            checkout = where / f"checkout-{kind}"
            script = checkout / ".venv" / "bin" / "inv"
            script.parent.mkdir(parents=True)
            script.write_text(FAKE_INV.format(name=f"hst.{kind}", log=self.log, seconds=seconds))
            script.chmod(0o755)
            self.checkouts[kind] = checkout
            overrides[("hst", kind)] = vm_overrides(where, address, self.lab.ssh_section(host, checkout))
            # the same VM serves jwst too (a fleet task of every observatory reaches it twice)
            overrides[("jwst", kind)] = vm_overrides(where / "jwst", address, self.lab.ssh_section(host, checkout))
        self.env = dict(os.environ, CRDSOPS_CONFIGS=str(make_configs(where, overrides)),
                        CRDSOPS_STATE=str(where / "control-installed.json"))

    def inv(self, *args, timeout=60) -> subprocess.CompletedProcess:
        return subprocess.run([INV, *args], cwd=CHECKOUT, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    def accepted(self) -> dict[str, int]:
        """kind -> how many SSH connections its sshd has authenticated so far."""
        return {kind: host.accepted() for kind, host in self.hosts.items()}

    def intervals(self) -> dict[str, tuple[float, float | None]]:
        """host -> (start, end or None) from the shared log."""
        spans: dict[str, list] = {}
        for line in self.log.read_text().splitlines():
            event, name, at = line.split()
            spans.setdefault(name, [None, None])[0 if event == "start" else 1] = float(at)
        return {name: (start, end) for name, (start, end) in spans.items()}

    def most_at_once(self) -> int:
        events = sorted((t, +1 if i == 0 else -1) for s in self.intervals().values() for i, t in enumerate(s))
        running = peak = 0
        for _, step in events:  # at equal times an end (-1) sorts first: touching spans do not overlap
            running += step
            peak = max(peak, running)
        return peak

    def close(self) -> None:
        for checkout in self.checkouts.values():
            pid_file = checkout / "hung.pid"
            for pid in pid_file.read_text().split() if pid_file.exists() else ():
                try:  # a `sleep` our hung host started (sshd left it running when we closed the channel)
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.lab.close()


@pytest.fixture(scope="module")
def fake_fleet(tmp_path_factory):
    fleet = FakeFleet(tmp_path_factory.mktemp("fleet-scale"))
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def fresh_log(fake_fleet):
    fake_fleet.log.write_text("")
    return fake_fleet


def by_host(stdout: str) -> dict[str, str]:
    return {ln.split()[0]: ln for ln in stdout.splitlines() if ln.startswith("hst.")}


@pytest.mark.parametrize("parallel, expected", [("1", 1), ("2", 2), (None, 3)])
def test_parallel_bounds_how_many_hosts_work_at_once(fresh_log, parallel, expected):
    flags = ["--parallel", parallel] if parallel else []  # default 8: all three at once
    result = fresh_log.inv("fleet-backup", "--obs", "hst", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 host(s) ok" in result.stdout
    assert set(fresh_log.intervals()) == {"hst.test", "hst.dev", "hst.ops"}
    assert fresh_log.most_at_once() == expected, fresh_log.log.read_text()


def test_a_hung_host_times_out_while_the_others_report(fresh_log):
    hang = fresh_log.checkouts["ops"] / "hang"
    hang.touch()
    try:
        started = time.monotonic()
        result = fresh_log.inv("fleet-backup", "--obs", "hst", "--timeout", "4", timeout=40)
        took = time.monotonic() - started
    finally:
        hang.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    lines = by_host(result.stdout)
    assert re.search(r" ok +\(exit 0\) hst\.test ran inv backup$", lines["hst.test"])
    assert re.search(r" ok +\(exit 0\) hst\.dev ran inv backup$", lines["hst.dev"])
    assert re.search(r" TIMEOUT +\(no exit\) timed out after 4 s", lines["hst.ops"])
    assert "2 of 3 host(s) ok; failed: hst.ops" in result.stdout
    assert 4 <= took < 4 + 8, took  # the timeout, and inv's own start-up; not the hung host's 300 s
    spans = fresh_log.intervals()
    assert spans["hst.ops"][1] is None and spans["hst.test"][1] and spans["hst.dev"][1]


def test_fleet_status_reports_the_hung_host_as_timeout(fresh_log):
    import json

    hang = fresh_log.checkouts["dev"] / "hang"
    hang.touch()
    try:
        result = fresh_log.inv("fleet-status", "--obs", "hst", "--timeout", "3", "--json", timeout=40)
    finally:
        hang.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    servers = {s["name"]: s for s in json.loads(result.stdout)["servers"]}
    assert servers["hst.dev"]["state"] == "TIMEOUT" and servers["hst.dev"]["exit"] is None
    assert servers["hst.dev"]["summary"].startswith("timed out after 3 s")
    assert servers["hst.test"]["state"] == "ok" and servers["hst.ops"]["state"] == "ok"


def test_bad_limits_are_one_line(fake_fleet):
    result = fake_fleet.inv("fleet-backup", "--obs", "hst", "--parallel", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --parallel must be at least 1 and --timeout at least 0 (0: no limit)"


def connections_during(fleet: FakeFleet, run) -> tuple[object, dict[str, int]]:
    """(what ``run()`` returned, kind -> the SSH connections its sshd accepted while it ran)."""
    before = fleet.accepted()
    result = run()
    return result, {kind: count - before[kind] for kind, count in fleet.accepted().items()}


def test_fleet_upgrade_carries_every_step_on_one_connection_per_host(fresh_log):
    """dev and test: the upgrade, then the gate; ops: the upgrade; each host's sshd accepts one connection."""
    result, counts = connections_during(fresh_log, lambda: fresh_log.inv(
        "fleet-upgrade", "--obs", "hst", "--to", "good", "--yes", timeout=90))
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [ln.split(":")[0] for ln in result.stdout.splitlines() if re.match(r"(dev|test|ops) (upgrade|gate): ", ln)]
    assert steps == ["dev upgrade", "dev gate", "test upgrade", "test gate", "ops upgrade"], result.stdout
    assert counts == {"dev": 1, "test": 1, "ops": 1}, counts


def test_fleet_upgrade_dry_run_probes_each_host_on_one_connection(fresh_log):
    result, counts = connections_during(fresh_log, lambda: fresh_log.inv(
        "fleet-upgrade", "--obs", "hst", "--to", "good", "--dry-run", timeout=90))
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("dev", "test", "ops"):
        assert re.search(rf"^{kind} probe: hst\.{kind} .* ok +\(exit 0\) hst\.{kind} ran inv upgrade --to good "
                         rf"--dry-run$", result.stdout, re.M), result.stdout
    assert counts == {"dev": 1, "test": 1, "ops": 1}, counts


def test_fleet_status_of_every_observatory_logs_in_to_each_host_once(fresh_log):
    """hst and jwst servers on the same three VMs: `inv status` runs twice on each, over one login."""
    result, counts = connections_during(fresh_log, lambda: fresh_log.inv("fleet-status", timeout=90))
    for name in ("hst.test", "hst.dev", "hst.ops", "jwst.test", "jwst.dev", "jwst.ops"):
        assert name in result.stdout, result.stdout + result.stderr
    assert "host(s) of hst" in result.stdout and "host(s) of jwst" in result.stdout, result.stdout
    assert counts == {kind: 1 for kind in KINDS}, counts


def test_one_connection_per_host_for_several_runs_and_closed_after(fake_fleet):
    """The library: two runs on one ``fleet.Connections``: one connection per host, none left after it."""
    from crdsops.remote import fleet
    from crdsops.remote import ssh as remote

    targets = [remote.Target(host=host.address, label=f"hst.{kind}",
                             **fake_fleet.lab.ssh_section(host, fake_fleet.checkouts[kind]))
               for kind, host in fake_fleet.hosts.items()]

    def two_runs():
        with fleet.Connections(timeout=30) as hosts:
            for argv in (["backup"], ["runtests"]):
                results = fleet.run_fleet(targets, argv, parallel=2, timeout=30, hosts=hosts)
                assert [r.state for r in results] == ["ok"] * 3, [r.line() for r in results]
            assert all(fake_fleet.hosts[kind].sessions() for kind in KINDS)  # open between the runs

    assert connections_during(fake_fleet, two_runs)[1] == {kind: 1 for kind in KINDS}
    deadline = time.monotonic() + 5
    while any(h.sessions() for h in fake_fleet.hosts.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(h.sessions() for h in fake_fleet.hosts.values()), "a connection was left open"


def test_an_interrupted_fleet_upgrade_closes_its_connections(fresh_log):
    """SIGTERM while dev's upgrade hangs (no --timeout): the connections close, so the task ends at once."""
    hang = fresh_log.checkouts["dev"] / "hang"
    hang.touch()
    try:
        proc = subprocess.Popen([INV, "fleet-upgrade", "--obs", "hst", "--to", "good", "--yes", "--timeout", "0"],
                                cwd=CHECKOUT, env=fresh_log.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while "start hst.dev" not in fresh_log.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fresh_log.hosts["dev"].sessions(), "dev's upgrade never started"
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the interrupted fleet-upgrade did not end (a connection left open?)") from None
    finally:
        hang.unlink()
    assert proc.returncode != 0, out + err
    assert "Traceback" not in err, err
    assert not fresh_log.hosts["dev"].sessions() or _gone_soon(fresh_log.hosts["dev"]), "dev's connection is open"


def _gone_soon(host, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while host.sessions() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not host.sessions()
