"""Start at boot: the systemd unit `inv install` writes passes `systemd-analyze verify`, and where
systemd does not run (this container) the @reboot line, run as cron runs it, brings a stopped server up."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from crontabs import crontab_lines
from support import make_configs

from crdsops.data import boot

ANALYZE = shutil.which("systemd-analyze")


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not ANALYZE, reason="systemd-analyze is missing (system-packages.txt, test: systemd)")
def test_install_writes_a_unit_that_systemd_accepts(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    unit = cfg.root / "crds-hst-django.service"
    text = unit.read_text()
    assert "Type=forking" in text and f"PIDFile={cfg.layout.pid_file}" in text
    assert "Restart=on-failure" in text and f"CRDSOPS_STATE={ops.state}" in text
    result = verify(unit)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.skipif(not ANALYZE, reason="systemd-analyze is missing (system-packages.txt, test: systemd)")
def test_apache_kinds_unit_follows_apaches_pid_file_and_reloads_gracefully(tmp_path):
    from crdsops.config.loader import load_config
    from crdsops.runtime import unitfile

    cfg = load_config("hst", "dev", make_configs(tmp_path, {("hst", "dev"): {"root": str(tmp_path / "hst-dev")}}))
    unit = tmp_path / unitfile.unit_name(cfg)
    unit.write_text(unitfile.render_unit(cfg))
    text = unit.read_text()
    assert f"PIDFile={cfg.layout.httpd_pid}" in text and f"ExecReload={cfg.layout.apachectl} graceful" in text
    # verify checks that every Exec line names an executable: the apachectl `inv install` would generate
    cfg.layout.apachectl.parent.mkdir(parents=True)
    shutil.copy("/bin/true", cfg.layout.apachectl)
    result = verify(unit)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("crontab"), reason="cron is not installed (make test installs it)")
@pytest.mark.skipif(boot.systemd_runs(), reason="systemd runs here: boot start is its unit, not cron")
def test_reboot_line_run_as_cron_does_brings_a_stopped_server_up(sqlite_server, real_crontab):
    said = sqlite_server.inv("boot", "enable").stdout
    assert "systemd does not run here" in said
    sqlite_server.inv("boot", "enable")  # idempotent
    ours = [line for line in crontab_lines() if line.endswith("# crdsops boot hst.django")]
    assert len(ours) == 1 and ours[0].startswith("@reboot "), crontab_lines()
    assert "boot start: enabled" in sqlite_server.inv("boot", "status").stdout
    status = sqlite_server.inv("status", check=False).stdout
    assert "boot:       enabled (cron @reboot line" in status, status

    sqlite_server.inv("stop")
    assert not sqlite_server.answers()
    # cron's environment: no CRDSOPS_* and no stack on the PATH; the line carries what it needs
    cron_env = ["env", "-i", f"HOME={os.environ.get('HOME', '/root')}", "PATH=/usr/bin:/bin", "SHELL=/bin/sh"]
    subprocess.run([*cron_env, "/bin/sh", "-c", ours[0].removeprefix("@reboot ")], check=True, timeout=300)
    boot_log = sqlite_server.cfg.layout.boot_log
    assert sqlite_server.answers(), boot_log.read_text()
    assert sqlite_server.pid() is not None
    assert boot_log.stat().st_mode & 0o777 == 0o600

    sqlite_server.inv("boot", "disable")
    assert not [line for line in crontab_lines() if "crdsops boot hst.django" in line]
    assert "boot start: disabled" in sqlite_server.inv("boot", "status").stdout
