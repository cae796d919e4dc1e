"""`inv schedule` against the machine's real crontab: one line, idempotent, removable."""

import shutil
import subprocess

import pytest
from crontabs import crontab_lines

pytestmark = pytest.mark.skipif(not shutil.which("crontab"), reason="cron is not installed (make test installs it)")


def test_schedule_installs_one_line_that_runs_backup_and_removes_it(ops, real_crontab):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    first = ops.inv("schedule").stdout
    ops.inv("schedule")
    ours = [line for line in crontab_lines() if "crdsops backup hst.django" in line]
    assert len(ours) == 1, ours
    line = ours[0]
    assert line in first  # it shows the line it installed
    assert " backup >> " in line and str(cfg.root / "logs" / "backup.log") in line
    assert f"CRDSOPS_STATE={ops.state}" in line  # cron finds this server, as the login did

    # the line really works when a shell runs it, as cron would
    command = line.split(" ", 5)[5]
    subprocess.run(["/bin/sh", "-c", command], check=True, timeout=300)
    assert any((d / "manifest.json").is_file() for d in cfg.backups.private_dir.iterdir()), \
        (cfg.root / "logs" / "backup.log").read_text()
    assert (cfg.root / "logs" / "backup.log").stat().st_mode & 0o777 == 0o600  # whatever cron's umask

    ops.inv("schedule", "--remove")
    assert not [row for row in crontab_lines() if "crdsops backup hst.django" in row]
