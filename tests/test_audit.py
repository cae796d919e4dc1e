"""The audit log as an operator reads it: one line per changing task, ok, failed or interrupted.

Every test runs the real `inv` on a real hst django server under tmp_path and reads
`<root>/logs/audit.jsonl` (and `inv history`) afterwards.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from support import CHECKOUT, INV

from crdsops.runtime import outcomes


def audit_lines(ops) -> list[dict]:
    log = ops.config("hst", "django").layout.audit_log
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def new_lines(ops, before: int) -> list[dict]:
    return audit_lines(ops)[before:]


@pytest.fixture
def fake_crontab(ops, tmp_path):
    """`inv schedule` against a crontab kept in a file (CRDSOPS_CRONTAB), not the machine's."""
    table = tmp_path / "crontab.txt"
    script = tmp_path / "crontab"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "-l" ]; then [ -f {table} ] && cat {table} || '
                      f'{{ echo "no crontab for root" >&2; exit 1; }}; else cat > {table}; fi\n')
    script.chmod(0o755)
    ops.env["CRDSOPS_CRONTAB"] = str(script)
    return table


def test_every_changing_task_leaves_exactly_one_line(running_hst, fake_crontab):
    ops = running_hst
    runs = [
        (["backup"], "backup"),
        (["schedule", "--at", "04:05"], "schedule"),
        (["schedule", "--remove"], "schedule"),
        (["stop"], "stop"),
        (["run"], "run"),
        (["install", "--obs", "hst", "--kind", "django"], "install"),
        (["install", "--if-none"], "install"),  # what `make run` does each time: a no-op, logged
        (["rerun"], "rerun"),
        (["restore", "--yes"], "restore"),
    ]
    for args, task in runs:
        before = len(audit_lines(ops))
        result = ops.inv(*args)
        assert "warning" not in result.stderr, result.stderr
        lines = new_lines(ops, before)
        assert [line["task"] for line in lines] == [task], (args, lines)
        line = lines[0]
        assert line["schema"] == 1 and line["result"] == "ok" and line["exit"] == 0 and line["error"] is None
        assert line["server"] == "hst.django" and line["seconds"] >= 0
        assert line["who"]["user"] and line["who"]["uid"] == os.getuid() and line["who"]["tty"] is False
        assert line["who"]["ssh"] is None and line["who"]["via"] is None
    by_task = {line["task"]: line for line in audit_lines(ops)}
    assert by_task["schedule"]["flags"] == {"remove": True}  # the later of the two
    assert by_task["install"]["flags"] == {"if-none": True}
    assert by_task["restore"]["flags"] == {"yes": True}
    restored = outcomes.read("restore", by_task["restore"]["touched"])
    backed_up = outcomes.read("backup", by_task["backup"]["touched"])
    cfg = ops.config("hst", "django")
    assert restored.backup.path.is_relative_to(cfg.backups.shared_dir.resolve())
    assert restored.safety_backup.parent == cfg.backups.private_dir and restored.safety_backup.is_dir()
    assert backed_up.backup.name in restored.backup.path.name  # the shared copy of the backup just made
    assert restored.backup.server == "hst.django" and backed_up.counts.references >= 1
    log = ops.config("hst", "django").layout.audit_log
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_failed_and_an_interrupted_backup_each_leave_one_line(running_hst):
    ops = running_hst
    before = len(audit_lines(ops))
    env = dict(ops.env, CRDSOPS_FAILPOINT="backup.dumped=fail")
    failed = subprocess.run([INV, "backup"], cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    env = dict(ops.env, CRDSOPS_FAILPOINT="backup.dumped=sigint")
    stopped = subprocess.run([INV, "backup"], cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 130, stopped.stderr
    first, second = new_lines(ops, before)
    assert first["result"] == "failed" and first["exit"] == 1
    assert first["error"] == "failpoint backup.dumped (CRDSOPS_FAILPOINT) made this step fail"
    assert f"error: {first['error']}" == failed.stderr.strip()  # the line the operator saw
    assert second["result"] == "interrupted" and second["exit"] == 130
    assert second["error"].startswith("interrupted during backup: dumping; hst.django is up as before")
    assert second["error"] == stopped.stderr.strip().splitlines()[-1].removeprefix("error: ")


def test_refusals_are_logged_with_their_line(running_hst):
    """Not confirmed, a busy lock: failed runs, each one line naming why."""
    ops = running_hst
    ops.inv("backup")
    up_before = json.loads(ops.inv("status", "--json", check=False).stdout)
    assert up_before["answers"] and up_before["pid"], up_before
    before = len(audit_lines(ops))
    refused = ops.inv("restore", check=False)  # no terminal, no --yes
    assert refused.returncode == 1
    cfg = ops.config("hst", "django")
    from crdsops.runtime import lock

    record = lock.acquire(cfg, "mirror")
    try:
        busy = ops.inv("stop", check=False)
    finally:
        lock.release(cfg, record)
    assert busy.returncode == 1
    not_confirmed, locked = new_lines(ops, before)
    assert not_confirmed["task"] == "restore" and not_confirmed["result"] == "failed"
    assert not_confirmed["error"].startswith("not confirmed; nothing was changed")
    assert locked["task"] == "stop" and locked["result"] == "failed"
    assert "is busy: `mirror` run by" in locked["error"]
    # the refused stop left it up: the same process, still answering
    after = json.loads(ops.inv("status", "--json", check=False).stdout)
    assert after["answers"] and after["pid"] == up_before["pid"], after


def test_dry_runs_and_reading_tasks_leave_no_line(running_hst):
    ops = running_hst
    before = len(audit_lines(ops))
    for args in (["backup", "--dry-run"], ["rerun", "--dry-run"], ["install", "--obs", "hst", "--kind", "django",
                 "--dry-run"], ["status"], ["backups"], ["config"], ["history"]):
        ops.inv(*args)
    ops.inv("verify", check=False)
    assert new_lines(ops, before) == []


def test_a_noop_build_is_logged_in_the_installed_servers_log(ops):
    plan = ops.inv("build", "--dry-run").stdout
    if "up to date" not in plan:
        pytest.skip("the stack is not up to date with the lock; a test must not rebuild it")
    ops.inv("install", "--obs", "hst", "--kind", "django")
    before = len(audit_lines(ops))
    ops.inv("build")
    (line,) = new_lines(ops, before)
    assert line["task"] == "build" and line["result"] == "ok"
    assert outcomes.read("build", line["touched"]).up_to_date is True


def test_history_shows_the_runs_newest_last(running_hst):
    ops = running_hst
    ops.inv("backup")
    subprocess.run([INV, "backup"], cwd=CHECKOUT, env=dict(ops.env, CRDSOPS_FAILPOINT="backup.started=fail"),
                   capture_output=True, timeout=300)
    out = ops.inv("history").stdout.splitlines()
    assert out[0].split()[:3] == ["when", "(UTC)", "ago"]
    tasks = [line.split()[3] for line in out[1:] if not line.startswith(" ")]
    assert tasks == ["install", "run", "backup", "backup"]
    assert " failed " in out[-1] and "failpoint backup.started" in out[-1]
    only = ops.inv("history", "-n", "1", "--task", "backup").stdout.splitlines()
    assert len(only) == 2 and " failed " in only[1]
    doc = json.loads(ops.inv("history", "--json", "--task", "backup").stdout)
    assert doc["schema"] == 1 and doc["server"] == "hst.django"
    assert [e["result"] for e in doc["entries"]] == ["ok", "failed"]
    assert outcomes.read("backup", doc["entries"][0]["touched"]).backup.path.is_dir()


def test_a_torn_last_line_is_skipped_and_the_log_goes_on(running_hst):
    """A power cut mid-write leaves half a line: readers skip it, the next run appends after it."""
    ops = running_hst
    log = ops.config("hst", "django").layout.audit_log
    with open(log, "a") as handle:
        handle.write('{"schema": 1, "at": "2026-')
    ops.inv("stop")
    doc = json.loads(ops.inv("history", "--json").stdout)
    assert [e["task"] for e in doc["entries"]][-1] == "stop"


def test_the_reader_reads_backwards_across_blocks(tmp_path):
    from crdsops.config.layout import Layout
    from crdsops.runtime import audit

    layout = Layout(tmp_path, tmp_path / "cache", tmp_path / "sf", "hst")
    who = audit.who()
    for i in range(300):
        audit.append(layout, audit.Entry(at=f"2026-11-28T00:00:{i % 60:02d}+00:00", task="backup" if i % 3 else "stop",
                                         server="hst.django", who=who, result="ok", touched={"n": i, "pad": "x" * 300}))
    entries = list(audit.newest_first(layout))
    assert [e.touched["n"] for e in entries] == list(range(299, -1, -1))
    assert [e.touched["n"] for e in audit.history(layout, limit=3, task="stop")] == [291, 294, 297]
    assert audit.last(layout, "stop").touched["n"] == 297


@pytest.mark.parametrize("task, touched, described", [
    ("mirror", {"source": "hst.test", "source_host": "10.0.0.5:22", "backup": "/s/.hst.test.20261201T031700Z",
                "backup_created": "2026-12-01T03:17:00+00:00", "safety_backup": "/b/20261201T120000Z"},
     "from hst.test (its backup /s/.hst.test.20261201T031700Z, made 2026-12-01T03:17:00+00:00)"),
    ("restore", {"backup": "/s/.hst.django.20261201T031700Z", "backup_created": "2026-12-01T03:17:00+00:00",
                 "backup_of": "hst.django", "safety_backup": "/b/20261201T120000Z"},
     "from /s/.hst.django.20261201T031700Z, made 2026-12-01T03:17:00+00:00"),
    ("backup", {"backup": "20261201T031700Z", "path": "/b/20261201T031700Z", "shared": "/s/hst.django"},
     "20261201T031700Z"),
])
def test_audit_lines_written_before_the_outcome_records_still_read(task, touched, described):
    """A server upgraded in place keeps its history: the older `touched` shape reads as today's record."""
    outcome = outcomes.read(task, touched)
    assert outcome is not None and outcome.describe() == described
    assert outcome.backup.path.name.endswith("20261201T031700Z")
