"""hst dev behind Apache/mod_wsgi looks after itself: its systemd unit passes `systemd-analyze verify`
with the real generated apachectl, and `inv rotate-logs` (rename, then `apachectl graceful`) under
the real client load refuses nothing, keeps Apache's parent, loses no access-log line, and never
starts an Apache that was stopped."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from clientload import ClientLoad
from logmarkers import Markers, log_lines, lost, numbers_in
from vmkinds import apache_processes, requires_vm_services, running_dev

pytestmark = [requires_vm_services,
              pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate is missing (system-packages.txt)")]


def test_rotation_takes_apache_onto_new_logs_gracefully(vm):
    with running_dev(vm) as cfg:
        layout = cfg.layout
        unit = cfg.root / "crds-hst-dev.service"
        if shutil.which("systemd-analyze"):
            result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
        parent = int(layout.httpd_pid.read_text())
        with ClientLoad(cfg.local_url, "hst") as load, Markers(cfg.local_url) as markers:
            for _ in range(2):  # the second compresses the first (delaycompress)
                time.sleep(1.1)  # a rotated log's name is dated to the second
                # notifempty: wait until Apache, reopened by the graceful, wrote to its new log
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and not (layout.apache_access_log.exists()
                                                           and layout.apache_access_log.stat().st_size):
                    time.sleep(0.1)
                vm.inv("rotate-logs", "--force")
            time.sleep(1)
        time.sleep(0.5)
        assert load.failed == 0, load.describe()
        assert int(layout.httpd_pid.read_text()) == parent, "Apache restarted instead of a graceful"
        rotated = sorted(p.name for p in layout.logs.glob("apache_access.log-*"))
        assert len(rotated) == 2 and rotated[0].endswith(".gz") and not rotated[1].endswith(".gz"), rotated
        assert lost(markers, log_lines(layout.logs, "apache_access.log")) == ""
        live = numbers_in(layout.apache_access_log.read_text().splitlines())
        assert max(markers.sent) in live, "Apache still writes the rotated file"

        vm.inv("stop")
        layout.apache_access_log.write_text("a line\n")
        time.sleep(1.1)
        vm.inv("rotate-logs", "--force")
        assert not apache_processes(cfg.root), "rotating the logs started a stopped Apache"
