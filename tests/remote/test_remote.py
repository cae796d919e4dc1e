"""`fab -H HOST TASK` and the fleet tasks against real sshd "VMs" on 127.0.0.x."""

from __future__ import annotations

import pytest
from sshd import SshLab


def test_fab_runs_the_task_on_the_host_and_streams_its_output(fleet):
    result = fleet.fab("-H", fleet.test_host.spec, "status")
    assert result.returncode == 0, result.stderr
    assert "server:     hst.test" in result.stdout
    assert "answers:    yes" in result.stdout


def test_fab_passes_the_exit_code_through(fleet):
    result = fleet.fab("-H", fleet.dev_host.spec, "status")  # installed, not running
    assert result.returncode == 1
    assert "hst.dev" in result.stdout and "not running" in result.stdout


def test_fab_finds_port_key_and_known_hosts_in_the_config(fleet):
    result = fleet.fab("-H", "127.0.0.2", "config", "--json")
    assert result.returncode == 0, result.stderr
    assert '"kind": "test"' in result.stdout


def test_fab_passes_flags(fleet):
    result = fleet.fab("-H", fleet.test_host.spec, "status", "--json")
    assert result.returncode == 0, result.stderr
    assert '"up": true' in result.stdout


def test_unknown_host_key_is_refused(fleet, tmp_path):
    lab = SshLab(tmp_path / "other")
    stranger = lab.host("127.0.0.5", known=False)
    try:
        # the fleet's client key is authorized there; only the host key is unknown
        stranger.authorized.write_text(fleet.lab.client_key.with_suffix(".pub").read_text())
        result = fleet.fab("-H", f"root@127.0.0.5:{stranger.port}", "status")
    finally:
        lab.close()
    assert result.returncode == 1
    assert "unknown" in result.stderr and "refusing" in result.stderr
    assert "Traceback" not in result.stderr


def test_changed_host_key_is_refused(tmp_path):
    from crdsops.errors import CrdsOpsError
    from crdsops.remote import ssh as remote

    lab = SshLab(tmp_path)
    host = lab.host("127.0.0.6")
    try:
        target = remote.Target(host=host.address, user="root", port=host.port, key=lab.client_key,
                               known_hosts=lab.known_hosts)
        assert remote.run(remote.connection(target), ["true"]).exited == 0
        host.rekey()
        with pytest.raises(CrdsOpsError, match="CHANGED"):
            remote.run(remote.connection(target), ["true"])
        known = lab.known_hosts.read_text()
        assert known.count("\n") == 1  # nothing was added to known_hosts
    finally:
        lab.close()


def test_changed_host_key_refused_by_fab(fleet, tmp_path):
    lab = SshLab(tmp_path)
    host = lab.host("127.0.0.7")
    try:
        host.authorized.write_text(fleet.lab.client_key.with_suffix(".pub").read_text())
        with open(fleet.lab.known_hosts, "a") as handle:
            handle.write(host.known_hosts_line())
        host.rekey()
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(f"Host 127.0.0.7\n  UserKnownHostsFile {fleet.lab.known_hosts}\n"
                              f"  IdentityFile {fleet.lab.client_key}\n")
        result = fleet.fab("-S", str(ssh_config), "-H", f"root@127.0.0.7:{host.port}", "status")
    finally:
        lab.close()
    assert result.returncode == 1
    assert "CHANGED" in result.stderr and "Traceback" not in result.stderr


def test_host_down_is_one_line(fleet):
    address, port = fleet.down
    result = fleet.fab("-H", f"root@{address}:{port}", "status")
    assert result.returncode == 1
    assert f"cannot reach {address}:{port}" in result.stderr


def test_host_that_drops_the_connection_is_one_line(fleet):
    """A port that accepts and resets (not sshd): paramiko's thread must not print its traceback."""
    import socket
    import struct
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def reset_every_connection():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            time.sleep(0.3)  # the client is waiting for the banner in paramiko's transport thread
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST, before any SSH banner

    threading.Thread(target=reset_every_connection, daemon=True).start()
    try:
        result = fleet.fab("-H", f"root@127.0.0.1:{port}", "status")
    finally:
        listener.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"127.0.0.1:{port}" in lines[0], lines


def test_fleet_status_reports_every_host_and_fails_when_one_does(fleet):
    result = fleet.inv("fleet-status", "--obs", "hst")
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout
    by_name = {ln.split()[0]: ln for ln in lines if ln.startswith("hst.")}
    assert " ok " in by_name["hst.test"]
    assert "DOWN" in by_name["hst.dev"] and "(exit 1)" in by_name["hst.dev"]  # installed, not running
    assert "UNREACHABLE" in by_name["hst.ops"] and "cannot reach" in by_name["hst.ops"]
    assert "1 of 3 host(s) ok" in result.stdout


def test_fleet_status_exit_zero_when_all_ok(fleet):
    result = fleet.fab("fleet-status", "--obs", "hst", "--kinds", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 of 1 host(s) ok" in result.stdout
