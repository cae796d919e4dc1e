"""Log rotation with the real logrotate under the real client load, on a running django-kind server:
no request refused, no line of the server log lost, and the audit log left alone."""

import os
import shutil
import subprocess
import time

import pytest
from clientload import ClientLoad
from crontabs import crontab_lines
from logmarkers import Markers, log_lines, lost

pytestmark = pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate is missing (system-packages.txt)")

ROTATIONS = 4


def test_rotation_under_load_loses_no_line_and_refuses_nothing(sqlite_server):
    layout = sqlite_server.cfg.layout
    sqlite_server.inv("status", check=False)  # a line in the audit log
    audit = layout.audit_log.stat()
    before = len(log_lines(layout.logs, "server.log"))
    assert before > 0

    with ClientLoad(sqlite_server.cfg.local_url, "hst") as load, Markers(sqlite_server.cfg.local_url) as markers:
        for _ in range(ROTATIONS):  # the second compresses the first (delaycompress), and so on
            time.sleep(1.1)  # a rotated log's name is dated to the second
            sqlite_server.inv("rotate-logs", "--force")
        time.sleep(0.5)
    time.sleep(0.5)  # the dev server writes its line once the answer is sent

    assert load.failed == 0, load.describe()
    rotated = sorted(p.name for p in layout.logs.glob("server.log-*"))
    assert len(rotated) == ROTATIONS and all(name.endswith(".gz") for name in rotated[:-1]), rotated
    assert not rotated[-1].endswith(".gz"), rotated
    lines = log_lines(layout.logs, "server.log")
    assert not lost(markers, lines), lost(markers, lines)
    assert len(lines) >= before + len(markers.sent) + len(load.requests)

    now = layout.audit_log.stat()
    assert (now.st_ino, now.st_dev) == (audit.st_ino, audit.st_dev) and now.st_size >= audit.st_size
    assert not list(layout.logs.glob("audit.jsonl?*")), os.listdir(layout.logs)
    assert "rotate-logs" in layout.audit_log.read_text()  # the task's own audit line, appended


@pytest.mark.skipif(not shutil.which("crontab"), reason="cron is not installed (make test installs it)")
def test_schedule_installs_a_nightly_rotation_that_runs_from_cron(ops, real_crontab):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    layout = ops.config("hst", "django").layout
    ops.inv("schedule", "--rotate-logs")
    ours = [line for line in crontab_lines() if line.endswith("# crdsops rotate-logs hst.django")]
    assert len(ours) == 1 and ours[0].startswith("7 0 * * * "), crontab_lines()
    layout.backup_log.write_text("a line of last night's backup\n")
    (layout.logrotate_state).write_text('logrotate state -- version 2\n"%s" 2020-1-1-0:0:0\n' % layout.backup_log)

    cron_env = ["env", "-i", f"HOME={os.environ.get('HOME', '/root')}", "PATH=/usr/bin:/bin", "SHELL=/bin/sh"]
    subprocess.run([*cron_env, "/bin/sh", "-c", ours[0].split(" ", 5)[5]], check=True, timeout=300)
    rotated = list(layout.logs.glob("backup.log-*"))
    assert len(rotated) == 1 and rotated[0].read_text() == "a line of last night's backup\n", \
        layout.rotate_log.read_text()
    assert not layout.backup_log.exists()  # the next backup's `>>` makes it anew
    assert '"task": "rotate-logs"' in layout.audit_log.read_text()

    ops.inv("schedule", "--rotate-logs", "--remove")
    assert not [line for line in crontab_lines() if "crdsops rotate-logs" in line]
