"""`inv nightly` on a real running server, run as cron runs it; a failing step; the cron pause."""

from __future__ import annotations

import datetime
import json
import subprocess

from receivers import MailReceiver
from support import make_configs

CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh", "LOGNAME": "root", "USER": "root"}
STEPS = ["backup", "rotate-logs", "clearsessions", "check-cache", "runtests"]


def configure(server, **sections) -> None:
    make_configs(server.ops.where, {(server.obs, server.kind): sections})


def cron_run(server, monkeypatch, job: str) -> subprocess.CompletedProcess:
    """This server's cron line for ``job`` run by /bin/sh with cron's bare environment."""
    from crdsops.data import schedule

    monkeypatch.setenv("CRDSOPS_CONFIGS", server.ops.env["CRDSOPS_CONFIGS"])
    monkeypatch.setenv("CRDSOPS_STATE", server.ops.env["CRDSOPS_STATE"])
    line = schedule.cron_line(server.ops.config(server.obs, server.kind), job=job)
    command = line.split(" ", 5)[5]  # after the five time fields
    return subprocess.run(["/bin/sh", "-c", command], env=CRON_ENV, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=900)


def audit_lines(server) -> list[dict]:
    log = server.cfg.layout.audit_log
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def summary(text: str) -> dict[str, str]:
    """``{step: result}`` from the summary lines (``nightly: backup  ok  4.2s ...``)."""
    found = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "nightly:" and words[1] in STEPS and words[2] != "...":
            found[words[1]] = words[2]
    return found


def test_the_nightly_cron_line_runs_every_step_with_one_audit_line_each(sqlite_server, monkeypatch):
    server = sqlite_server
    configure(server, nightly={"runtests_tiers": ["django"]})
    before = len(audit_lines(server))
    result = cron_run(server, monkeypatch, "nightly")
    log = server.cfg.layout.nightly_log.read_text()
    assert result.returncode == 0, log
    assert summary(log) == {step: "ok" for step in STEPS}, log

    lines = audit_lines(server)[before:]
    assert [line["task"] for line in lines] == [*STEPS, "nightly"]
    assert all(line["result"] == "ok" for line in lines), lines
    assert all(line["flags"] == {"nightly": True} for line in lines[:-1])
    steps = lines[-1]["touched"]["steps"]
    assert [(s["task"], s["result"]) for s in steps] == [(step, "ok") for step in STEPS]
    assert lines[0]["touched"]["backup"]["name"] == server.private_backups()[-1].name
    assert server.shared().exists()  # the shared publish

    status = server.inv("status", check=False).stdout
    assert "last backup: ok" in status and "runtests:   ok" in status and "check-cache: ok" in status, status
    assert "sha1 sample" in json.loads(server.cfg.layout.last_result("check-cache").read_text())["mode"]
    history = server.inv("history", "--task", "nightly").stdout
    assert "backup ok, rotate-logs ok, clearsessions ok, check-cache ok, runtests ok" in history, history
    assert server.answers()


def test_a_failing_step_fails_the_night_the_later_steps_still_run_and_the_mail_goes_out(sqlite_server):
    server = sqlite_server
    with MailReceiver() as mail:
        configure(server, monitoring={"mail_to": ["ops@example.org"], "smtp_host": "127.0.0.1",
                                      "smtp_port": mail.port})
        before = len(audit_lines(server))
        env = dict(server.ops.env, CRDSOPS_FAILPOINT="backup.dumped=fail")
        result = server.inv("nightly", env=env, check=False)
        messages = list(mail.messages)
    assert result.returncode == 1, result.stdout + result.stderr
    # the django kind's tier is not in the default nightly.runtests_tiers (dev, test)
    assert summary(result.stdout) == {"backup": "FAILED", "rotate-logs": "ok", "clearsessions": "ok",
                                      "check-cache": "ok", "runtests": "skipped"}, result.stdout
    assert "nightly: runtests      skipped" in result.stdout and "django tier" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == \
        "error: 1 of 5 nightly steps failed: backup (`inv history` says why)"

    lines = audit_lines(server)[before:]
    assert [(line["task"], line["result"]) for line in lines] == [
        ("backup", "failed"), ("rotate-logs", "ok"), ("clearsessions", "ok"), ("check-cache", "ok"),
        ("nightly", "failed")]
    assert "failpoint backup.dumped" in lines[0]["error"]
    assert not server.private_backups()

    assert len(messages) == 1  # one mail for the night, not one per step
    message = messages[0]
    assert message["Subject"].startswith("[crdsops] nightly of hst.django on ") and "FAILED: 1 of 5" in message["Subject"]
    body = message.get_content()
    assert "nightly: backup        FAILED" in body and "nightly: check-cache   ok" in body, body


def test_a_pause_makes_the_cron_lines_do_nothing_until_its_time(sqlite_server, monkeypatch):
    server = sqlite_server
    said = server.inv("schedule", "--pause-until", "2h").stdout
    assert "pause crdsops' cron lines until" in said
    status = server.inv("status", check=False).stdout
    cron = [line for line in status.splitlines() if line.startswith("cron:")]
    assert len(cron) == 1 and "paused until" in cron[0], status
    before = len(audit_lines(server))

    result = cron_run(server, monkeypatch, "nightly")
    log = server.cfg.layout.nightly_log.read_text()
    assert result.returncode == 0, log
    assert log.strip().splitlines() == [log.strip().splitlines()[0]] and "nothing done" in log, log
    assert len(audit_lines(server)) == before and not server.private_backups()

    server.inv("backup")  # an operator's own run is never paused
    assert len(server.private_backups()) == 1
    server.inv("schedule", "--resume")
    assert "cron:" not in server.inv("status", check=False).stdout


def test_a_pause_in_the_past_is_ignored(sqlite_server, monkeypatch):
    server = sqlite_server
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    refused = server.inv("schedule", "--pause-until", past.isoformat(), check=False)
    assert refused.returncode == 1 and "is in the past" in refused.stderr
    # one that was set before and whose time has now passed
    server.cfg.layout.cron_pause.write_text(json.dumps({"until": past.isoformat(), "by": "root"}))
    assert "cron:" not in server.inv("status", check=False).stdout
    result = cron_run(server, monkeypatch, "backup")
    assert result.returncode == 0, server.cfg.layout.backup_log.read_text()
    assert len(server.private_backups()) == 1


def test_schedule_nightly_installs_one_line_in_place_of_the_separate_ones(sqlite_server, real_crontab):
    from crontabs import crontab_lines

    server = sqlite_server
    server.inv("schedule")
    server.inv("schedule", "--rotate-logs")
    said = server.inv("schedule", "--nightly", "--at", "02:30").stdout
    ours = [line for line in crontab_lines() if "# crdsops " in line and line.endswith("hst.django")]
    assert len(ours) == 1 and ours[0].startswith("30 2 * * * ") and ours[0].endswith("# crdsops nightly hst.django")
    assert " nightly >> " in ours[0] and "CRDSOPS_CRON=1" in ours[0]
    assert "(the nightly job runs it)" in said
    server.inv("schedule", "--nightly", "--remove")
    assert not [line for line in crontab_lines() if "# crdsops nightly hst.django" in line]
