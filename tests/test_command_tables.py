"""Given these answers, these commands: decisions pinned as tables through ``commands.fake``.

Each table lists every command the code may run (anything else fails the test); a command fed
on stdin is matched with its input after ``<<<``, so SQL statements can be told apart.
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
from receivers import closed_port
from support import make_configs

from crdsops import commands
from crdsops.config.loader import load_config
from crdsops.config.model import Database
from crdsops.db import mysql
from crdsops.db.engines import MysqlEngine
from crdsops.errors import CrdsOpsError
from crdsops.runtime.backends.modwsgi import ModWsgiBackend
from crdsops.runtime.notify import Notifier

OK = commands.Result((), 0)
DENIED = "Access denied for user 'crds'@'10.0.0.5' (using password: YES)"
DB = Database(engine="mysql", name="crds_hst_ops", option_file="/srv/crds/my.cnf")


def config(tmp_path, **sections):
    """hst dev (Apache/mod_wsgi and MySQL) under ``tmp_path``, with a real 0600 option file."""
    option_file = mysql.write_option_file(tmp_path / "my.cnf", "crds", "secret")
    overrides = {"root": str(tmp_path / "hst-dev"), "database": {"option_file": str(option_file)}}
    overrides.update(sections)
    return load_config("hst", "dev", make_configs(tmp_path, {("hst", "dev"): overrides}))


# --- mysql.run_sql: the client's error, one line with its fix -------------------------------

@pytest.mark.parametrize("stderr", [
    f"ERROR 1045 (28000): {DENIED}",                                      # the mysql client
    f'mysqldump: Got error: 1045: "{DENIED}" when trying to connect',     # mysqldump's shape
])
def test_a_refused_login_is_the_option_file_advice(stderr):
    with commands.fake({r"^mysql ": commands.Result((), 1, "", stderr)}) as calls:
        with pytest.raises(CrdsOpsError) as caught:
            mysql.run_sql(DB, "SELECT CURRENT_USER();\n")
    assert str(caught.value) == (f"MySQL at 127.0.0.1:3306 refused the login ({DENIED}); "
                                 "fix user/password in the option file /srv/crds/my.cnf (database.option_file)")
    assert calls == [("mysql", "--defaults-extra-file=/srv/crds/my.cnf", "--host=127.0.0.1", "--port=3306",
                      "--batch", "--skip-column-names", "--connect-timeout=5")]  # credentials from the file only
    assert calls.lines[0].endswith(" <<< SELECT CURRENT_USER();\n")  # SQL on stdin, never on argv


def test_a_mysql_that_does_not_answer_is_one_line():
    with commands.fake({r"^mysql ": commands.times_out}):
        with pytest.raises(CrdsOpsError) as caught:
            mysql.run_sql(DB, "SELECT 1;\n", timeout=60)
    assert str(caught.value) == "MySQL at 127.0.0.1:3306 did not answer within 60s; check the server"


def test_no_mysql_client_says_which_package():
    with commands.fake({r"^mysql ": commands.not_installed}):
        with pytest.raises(CrdsOpsError) as caught:
            mysql.run_sql(DB, "SELECT 1;\n")
    assert str(caught.value) == ("the `mysql` client is not installed; install it (Debian: apt-get install "
                                 "mariadb-client)")


# --- MysqlEngine.discard_staging: a DROP only for a schema that is there --------------------

SCHEMA_QUERY = (r"<<< SELECT SCHEMA_NAME FROM information_schema\.SCHEMATA "
                r"WHERE SCHEMA_NAME = 'crds_hst_dev_crdsops_new'")
DROP = r"<<< DROP DATABASE `crds_hst_dev_crdsops_new`;"


def test_discard_staging_drops_the_staging_schema_when_it_is_there(tmp_path):
    engine = MysqlEngine(config(tmp_path))
    with commands.fake({SCHEMA_QUERY: commands.Result((), 0, "crds_hst_dev_crdsops_new\n"), DROP: OK}) as calls:
        engine.discard_staging()
    assert [line.split(" <<< ")[1].split()[0:2] for line in calls.lines] == [["SELECT", "SCHEMA_NAME"],
                                                                            ["DROP", "DATABASE"]]


def test_discard_staging_drops_nothing_when_the_schema_is_not_there(tmp_path):
    """An account without rights on the staging schema (why the staging failed) may not even drop
    a schema that is not there; that refusal must not hide the cause: no DROP is issued."""
    engine = MysqlEngine(config(tmp_path))
    with commands.fake({SCHEMA_QUERY: OK}) as calls:  # a DROP would find no answer and fail the test
        engine.discard_staging()
    assert len(calls) == 1


# --- notify: sendmail when there is no SMTP host; its refusal a warning ---------------------

def test_without_an_smtp_host_the_mail_goes_to_sendmail(tmp_path):
    cfg = config(tmp_path, monitoring={"mail_to": ["ops@example.org"], "sendmail": "/usr/lib/sendmail"})
    with commands.fake({r"^/usr/lib/sendmail -t -oi <<< ": OK}) as calls:
        warnings = Notifier(cfg, "backup").finished(False, "error: the cause", "the output\n")
    assert warnings == []
    assert calls == [("/usr/lib/sendmail", "-t", "-oi")]
    assert "To: ops@example.org" in calls.lines[0] and "the cause" in calls.lines[0]  # the message on stdin


def test_a_refusing_sendmail_is_a_warning_not_a_failure(tmp_path):
    cfg = config(tmp_path, monitoring={"mail_to": ["ops@example.org"]})
    refused = commands.Result((), 75, b"", b"sendmail: fatal: queue file write error\n")
    with commands.fake({r"^/usr/sbin/sendmail -t -oi": refused}):
        warnings = Notifier(cfg, "backup").finished(False, "error: the cause", "")
    assert warnings == ["warning: /usr/sbin/sendmail refused the mail to ops@example.org (exit 75: sendmail: "
                        "fatal: queue file write error); the backup itself is unaffected"]


def test_a_hung_sendmail_is_a_warning_too(tmp_path):
    cfg = config(tmp_path, monitoring={"mail_to": ["ops@example.org"], "timeout": 7})
    with commands.fake({r"^/usr/sbin/sendmail ": commands.times_out}):
        warnings = Notifier(cfg, "restore").finished(False, "error: the cause", "")
    assert warnings == ["warning: could not mail ops@example.org through /usr/sbin/sendmail (no answer within 7s); "
                        "the restore itself is unaffected"]


def test_with_an_smtp_host_no_command_runs(tmp_path):
    port = closed_port()
    cfg = config(tmp_path, monitoring={"mail_to": ["ops@example.org"], "smtp_host": "127.0.0.1", "smtp_port": port,
                                       "timeout": 3})
    with commands.fake({}) as calls:  # sendmail would find no answer
        warnings = Notifier(cfg, "backup").finished(False, "error: the cause", "")
    assert calls == []
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: could not mail ops@example.org through 127.0.0.1:{port} (")


# --- the mod_wsgi backend: apachectl ---------------------------------------------------------

def apache(tmp_path):
    """hst dev with its generated apachectl in place (a file; the table answers for it)."""
    cfg = config(tmp_path)
    cfg.layout.apachectl.parent.mkdir(parents=True)
    cfg.layout.apachectl.write_text("#!/bin/sh\nexit 1\n")
    cfg.layout.httpd_pid.parent.mkdir(parents=True)
    return cfg


def test_start_logs_in_to_mysql_then_runs_apachectl_start(tmp_path):
    cfg = apache(tmp_path)

    def apachectl_start(argv):  # Apache writes its pid file
        cfg.layout.httpd_pid.write_text(f"{os.getpid()}\n")
        return OK

    with commands.fake({r"^mysql .* <<< SELECT CURRENT_USER\(\);": commands.Result((), 0, "crds@localhost\n"),
                        r"/apachectl start$": apachectl_start}) as calls:
        pid = ModWsgiBackend().start(cfg)
    assert pid == os.getpid()
    assert calls[0][0] == "mysql"
    assert calls[1] == (str(cfg.layout.apachectl), "start")


def test_a_refused_database_login_never_starts_apache(tmp_path):
    cfg = apache(tmp_path)
    with commands.fake({r"^mysql ": commands.Result((), 1, "", f"ERROR 1045 (28000): {DENIED}")}) as calls:
        with pytest.raises(CrdsOpsError) as caught:  # an apachectl start would find no answer
            ModWsgiBackend().start(cfg)
    assert "refused the login" in str(caught.value) and len(calls) == 1


def test_apachectl_start_failing_names_its_exit_and_its_last_words(tmp_path):
    cfg = apache(tmp_path)
    said = "(98)Address already in use: AH00072: make_sock: could not bind to address 127.0.0.1:8080"
    stderr = f"setlocale: LC_ALL: cannot change locale\n{said}\n"  # the locale noise is left out
    with commands.fake({r"^mysql ": commands.Result((), 0, "crds@localhost\n"),
                        r"/apachectl start$": commands.Result((), 1, "", stderr)}):
        with pytest.raises(CrdsOpsError) as caught:
            ModWsgiBackend().start(cfg)
    assert str(caught.value) == (f"hst.dev: Apache failed to start (apachectl exit 1); {said}; "
                                 f"see {cfg.layout.apache_error_log} (nothing new in it)")


def test_stop_runs_apachectl_stop_and_waits(tmp_path):
    cfg = apache(tmp_path)
    httpd = subprocess.Popen(["sleep", "30"])

    def apachectl_stop(argv):  # Apache stops
        httpd.terminate()
        return OK

    with commands.fake({r"/apachectl stop$": apachectl_stop}) as calls:
        forced = ModWsgiBackend().stop(cfg, httpd.pid, timeout=10)
    assert calls == [(str(cfg.layout.apachectl), "stop")]
    assert forced is False and httpd.poll() is not None


def test_a_hung_apachectl_stop_still_stops_apache(tmp_path, caplog):
    cfg = apache(tmp_path)
    httpd = subprocess.Popen(["sleep", "30"])
    with commands.fake({r"/apachectl stop$": commands.times_out}), caplog.at_level(logging.WARNING):
        forced = ModWsgiBackend().stop(cfg, httpd.pid, timeout=0.5)
    assert forced is True and httpd.poll() is not None  # killed
    assert [r.getMessage() for r in caplog.records] == [
        "apachectl stop did not finish within 60s; it was stopped; stopping hst.dev's Apache by signal"]


def test_an_interrupt_kills_the_command_reaps_it_and_is_raised(tmp_path):
    """Ctrl-C during a command (even one in a session of its own, as the mysql client runs): the command is
    killed and reaped and the interrupt raised at once; the wait never hangs on subprocess's own lock."""
    import os
    import signal
    import threading
    import time

    from crdsops import interrupts

    marker = tmp_path / "pid"
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(interrupts.Interrupted), interrupts.raising_signals():
        commands.run(["sh", "-c", f"echo $$ > {marker}; exec sleep 30"], new_session=True)
    assert time.monotonic() - started < 5
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped (a zombie would still answer)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # raising_signals leaves the three ignored
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_a_command_fed_input_may_run_longer_than_one_wait():
    """The input goes in once, however many short waits the command takes (a mysql load, a crontab)."""
    big = "x" * 300_000 + "\n"  # more than a pipe holds: written while the command runs
    result = commands.run(["sh", "-c", "sleep 0.35; wc -c"], input=big)
    assert result.stdout.strip() == str(len(big))
