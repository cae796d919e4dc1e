"""Alerts as the people on call receive them: a real HTTP receiver (Healthchecks-style pings) and a
real SMTP server (aiosmtpd) on loopback, and the backup run as cron runs it.

The cron run is the very command `inv schedule` installs (``schedule.cron_line``), run by
/bin/sh with the bare environment cron gives (no terminal, PATH=/usr/bin:/bin), so nothing
here depends on the test's own environment reaching the backup.
"""

from __future__ import annotations

import json
import re
import subprocess

from receivers import MailReceiver, PingReceiver, closed_port
from support import make_configs

CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh", "LOGNAME": "root", "USER": "root"}


def monitoring(server, **keys) -> None:
    """Set keys of this server's ``monitoring:`` section (and anything else given as sections)."""
    sections = {"monitoring": {k: v for k, v in keys.items() if not isinstance(v, dict)}}
    sections.update({k: v for k, v in keys.items() if isinstance(v, dict)})
    make_configs(server.ops.where, {(server.obs, server.kind): sections})


def cron_backup(server, monkeypatch) -> subprocess.CompletedProcess:
    """Run this server's nightly line as cron would; return what /bin/sh returned."""
    from crdsops.data import schedule

    monkeypatch.setenv("CRDSOPS_CONFIGS", server.ops.env["CRDSOPS_CONFIGS"])
    monkeypatch.setenv("CRDSOPS_STATE", server.ops.env["CRDSOPS_STATE"])
    line = schedule.cron_line(server.ops.config(server.obs, server.kind))
    command = line.split(" ", 5)[5]  # after the five time fields
    return subprocess.run(["/bin/sh", "-c", command], env=CRON_ENV, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def last_audit(server) -> dict:
    log = server.ops.config(server.obs, server.kind).layout.audit_log
    return json.loads(log.read_text().splitlines()[-1])


def test_a_failed_cron_backup_reaches_the_ping_receiver_and_the_mailbox(mysql_server, monkeypatch):
    """The database is down (nothing listens on its port): the error line is pinged and mailed, in the run."""
    server = mysql_server
    with PingReceiver() as pings, MailReceiver() as mail:
        monitoring(server, ping_url=pings.url, mail_to=["crds-oncall@example.org", "ops@example.org"],
                   mail_from="crdsops@hst-dev.example.org", smtp_host="127.0.0.1", smtp_port=mail.port,
                   database={"port": closed_port()})
        result = cron_backup(server, monkeypatch)
        # what arrived by the time the run ended: no waiting
        paths, messages = pings.paths(), list(mail.messages)
    log = server.cfg.layout.backup_log.read_text()
    assert result.returncode == 1
    error = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Can't connect" in error[0], log
    assert paths == ["/start", "/fail"], paths
    assert pings.pings[0].query["rid"] == pings.pings[1].query["rid"]  # start and end paired
    assert error[0] in pings.pings[1].body
    assert "backup of hst.dev" in pings.pings[1].body and "FAILED" in pings.pings[1].body
    assert len(messages) == 1
    (envelope,) = mail.envelopes
    assert envelope == ("crdsops@hst-dev.example.org", ["crds-oncall@example.org", "ops@example.org"])
    message = messages[0]
    assert message["Subject"].startswith("[crdsops] backup of hst.dev on ") and "FAILED: " in message["Subject"]
    # dump, counts and migrations all need the database: those that failed before the stop are named, one cause
    assert re.search(r"failed while making (dump|counts|migrations)(, (dump|counts|migrations))*: "
                     r"cannot reach the MySQL server", message["Subject"]), message["Subject"]
    assert error[0] in message.get_content()
    line = last_audit(server)
    assert line["task"] == "backup" and line["result"] == "failed" and line["error"] == error[0].removeprefix("error: ")
    assert line["who"]["tty"] is False and line["warnings"] == []


def test_a_successful_backup_pings_success_and_mails_nobody(sqlite_server, monkeypatch):
    server = sqlite_server
    with PingReceiver() as pings, MailReceiver() as mail:
        monitoring(server, ping_url=pings.url, mail_to=["ops@example.org"], smtp_host="127.0.0.1",
                   smtp_port=mail.port)
        result = cron_backup(server, monkeypatch)
        paths = pings.paths()
    assert result.returncode == 0, server.cfg.layout.backup_log.read_text()
    assert paths == ["/start", "/"]
    assert pings.pings[0].query["rid"] == pings.pings[1].query["rid"]
    assert "backup of hst.django" in pings.pings[1].body and ": ok" in pings.pings[1].body
    assert "verified" in pings.pings[1].body  # the last lines of the backup's output
    assert mail.messages == []  # mail_on: failure
    assert last_audit(server)["result"] == "ok"


def test_mail_on_always_and_through_the_local_sendmail(sqlite_server, tmp_path):
    """No SMTP host: the message goes to `sendmail -t -oi` on stdin, whole."""
    server = sqlite_server
    spool = tmp_path / "spool.eml"
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\ncat > {spool}\n')
    sendmail.chmod(0o755)
    monitoring(server, mail_to=["ops@example.org"], mail_on="always", sendmail=str(sendmail))
    server.inv("backup")
    import email
    import email.policy

    message = email.message_from_bytes(spool.read_bytes(), policy=email.policy.default)
    assert (tmp_path / "args").read_text().split() == ["-t", "-oi"]
    assert message["To"] == "ops@example.org" and message["Subject"].endswith(": ok")
    assert "backup of hst.django" in message.get_content()


def test_an_interrupted_restore_pings_fail_with_the_interrupt_line(sqlite_server):
    from interrupting import at_failpoint

    server = sqlite_server
    server.inv("backup")
    with PingReceiver() as pings:
        monitoring(server, ping_url=pings.url)
        run = at_failpoint(["restore", "--yes"], server.ops.env, "restore.swapped", "sigint")
        paths = pings.paths()
    run.check()
    assert run.returncode == 130
    assert paths == ["/start", "/fail"]
    assert run.stderr.strip().splitlines()[-1] in pings.pings[1].body
    assert server.answers()


def test_notifications_that_cannot_be_delivered_are_warnings_not_failures(sqlite_server):
    """Receivers down, or refusing: the backup is made and exits 0; each failure is a warning line."""
    server = sqlite_server
    with PingReceiver(status=503) as refusing:
        monitoring(server, ping_url=refusing.url, mail_to=["ops@example.org"], mail_on="always",
                   smtp_host="127.0.0.1", smtp_port=closed_port(), timeout=3)
        result = server.inv("backup")  # exit 0, or Ops.inv raises
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, result.stderr  # the start ping, the end ping, the mail
    assert "was refused (HTTP 503)" in warnings[0] and "could not mail ops@example.org" in warnings[2]
    assert all("the backup itself is unaffected" in w for w in warnings)
    line = last_audit(server)
    assert line["result"] == "ok" and len(line["warnings"]) == 3
    assert line["warnings"][2].startswith("could not mail ops@example.org through 127.0.0.1:")
    assert len(server.private_backups()) == 1

    monitoring(server, ping_url=f"http://127.0.0.1:{closed_port()}/ping/x", mail_to=[])
    result = server.inv("backup")
    assert result.stderr.count("warning: could not ping") == 2, result.stderr
    assert len(server.private_backups()) == 2
