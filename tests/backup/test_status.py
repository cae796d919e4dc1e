"""`inv status` answering the morning questions, and its exit codes: 0 ok, 1 down, 2 warning."""

from __future__ import annotations

import datetime
import json
import time

from support import make_configs


def set_keys(server, **sections) -> None:
    make_configs(server.ops.where, {(server.obs, server.kind): sections})


def status(server):
    return server.inv("status", check=False)


def status_json(server) -> dict:
    return json.loads(server.inv("status", "--json", check=False).stdout)


def line_of(text: str, key: str) -> str:
    return next(row for row in text.splitlines() if row.startswith(key + ":"))


def age_backup(backup, hours: float) -> None:
    """Make ``backup`` look ``hours`` old: its manifest's date moves back (`inv verify` re-records it)."""
    manifest = backup / "manifest.json"
    data = json.loads(manifest.read_text())
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours)
    data["created"] = then.isoformat(timespec="seconds")
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_an_old_backup_warns_with_exit_2_and_a_fresh_one_clears_it(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    (backup,) = server.private_backups()
    age_backup(backup, 30)
    server.inv("verify", "-b", backup.name)  # a backup that verifies, 30 hours old
    result = status(server)
    assert result.returncode == 2, result.stdout
    line = line_of(result.stdout, "backup")
    assert f"{backup.name} made " in line and "30h ago, verified" in line
    assert "WARN: the newest verified backup is 30h old, more than 26h (monitoring.backup_max_age)" in line
    assert line_of(result.stdout, "state") == "state:      WARN (1)"
    assert "WARN" not in line_of(result.stdout, "shared")  # its copy in the shared dir is fresh
    doc = status_json(server)
    assert doc["schema"] == 1 and doc["state"] == "warn" and doc["exit"] == 2 and doc["up"] is True
    assert doc["warnings"] == ["backup: the newest verified backup is 30h old, more than 26h "
                               "(monitoring.backup_max_age)"]
    assert doc["verified_backup"]["name"] == backup.name and 30 * 3600 <= doc["verified_backup"]["age_seconds"]
    assert doc["thresholds"]["backup_max_age"] == 26 * 3600

    server.inv("backup")
    result = status(server)
    assert result.returncode == 0, result.stdout
    assert line_of(result.stdout, "state") == "state:      ok"
    assert "s ago, verified" in line_of(result.stdout, "backup") and "WARN" not in result.stdout


def test_the_threshold_comes_from_the_config_and_null_turns_it_off(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    (backup,) = server.private_backups()
    age_backup(backup, 30)
    server.inv("verify", "-b", backup.name)
    set_keys(server, monitoring={"backup_max_age": "2d"})
    assert status(server).returncode == 0
    set_keys(server, monitoring={"backup_max_age": "1h30m"})
    assert "more than 1h30m" in status(server).stdout
    set_keys(server, monitoring={"backup_max_age": None})
    assert status(server).returncode == 0


def test_a_bad_newest_backup_is_shown_and_the_age_of_the_newest_verified_counts(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    server.inv("backup")
    old, new = server.private_backups()
    age_backup(old, 40)
    server.inv("verify", "-b", old.name)
    dump = next(new.glob("database.*"))
    dump.write_bytes(dump.read_bytes()[:-10])
    server.inv("verify", "-b", new.name, check=False)
    result = status(server)
    assert result.returncode == 2
    line = line_of(result.stdout, "backup")
    assert f"{new.name} made " in line and ", BAD (" in line and f"newest verified: {old.name}, 40h ago" in line
    assert "the newest verified backup is 40h old" in line


def test_a_server_with_no_backup_warns_once_it_is_older_than_the_threshold(sqlite_server):
    server = sqlite_server
    assert status(server).returncode == 0  # just installed: no backup expected yet
    assert line_of(status(server).stdout, "backup") == "backup:     none yet"
    set_keys(server, monitoring={"backup_max_age": "1s", "shared_max_age": "1s"})
    time.sleep(1.5)
    result = status(server)
    assert result.returncode == 2
    assert "WARN: no newest verified backup (installed " in line_of(result.stdout, "backup")
    assert "WARN: no shared latest" in line_of(result.stdout, "shared")
    assert line_of(result.stdout, "state") == "state:      WARN (2)"


def test_down_is_exit_1_whatever_the_warnings(sqlite_server):
    server = sqlite_server
    set_keys(server, monitoring={"backup_max_age": "1s"})
    time.sleep(1.5)
    server.inv("stop")
    result = status(server)
    assert result.returncode == 1
    assert line_of(result.stdout, "state") == "state:      DOWN, and 1 warning(s)"
    assert status_json(server)["state"] == "down"


def test_last_restore_runtests_and_check_cache_are_reported(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    server.inv("restore", "--yes")
    text = status(server).stdout
    restore = line_of(text, "restore")
    assert restore.startswith("restore:    ok ") and " ago by " in restore
    assert f"from {server.shared().resolve()}" in restore and ", made 20" in restore
    assert line_of(text, "mirror") == "mirror:     never (in the audit log)"
    assert line_of(text, "runtests") == "runtests:   never run"
    # the restore ended with the quick cache check, recorded as the last check-cache result
    assert line_of(text, "check-cache").startswith("check-cache: ok ")
    assert "files checked (sizes)" in line_of(text, "check-cache")
    doc = status_json(server)
    assert doc["last_restore"]["result"] == "ok" and doc["last_restore"]["touched"]["safety_backup"]
    assert doc["last_backup"]["result"] == "ok"

    # a failing runtests (the server is stopped for it) is a warning once the server is back
    server.inv("stop")
    assert server.inv("runtests", "--live-only", check=False).returncode == 1
    server.inv("run")
    result = status(server)
    assert result.returncode == 2
    assert line_of(result.stdout, "runtests").startswith("runtests:   FAILED ")
    assert "0 passed, 1 failed" in line_of(result.stdout, "runtests")
    assert "WARN: the last run failed" in line_of(result.stdout, "runtests")
    server.inv("runtests", "--live-only")
    result = status(server)
    assert result.returncode == 0, result.stdout
    assert line_of(result.stdout, "runtests").startswith("runtests:   ok ")

    # check-cache's result, in the shape `inv check-cache` records it
    record = server.cfg.layout.last_result("check-cache")
    record.write_text(json.dumps({"schema": 1, "task": "check-cache", "at": datetime.datetime.now(
        datetime.UTC).isoformat(timespec="seconds"), "mode": "sizes", "ok": False, "checked": 3, "bytes": 1234,
        "problems": {"missing": ["d0m00001j_drk.fits"]}, "seconds": 0.1}))
    result = status(server)
    assert result.returncode == 2
    assert line_of(result.stdout, "check-cache").startswith("check-cache: FAILED ")
    assert "3 files checked (sizes), 1 problem(s)" in line_of(result.stdout, "check-cache")
    assert status_json(server)["check_cache"]["result"]["problems"] == {"missing": ["d0m00001j_drk.fits"]}
    set_keys(server, monitoring={"check_cache_max_age": "1s"})
    record.write_text(record.read_text().replace('"ok": false', '"ok": true'))
    time.sleep(1.5)
    assert "more than 1s (monitoring.check_cache_max_age)" in status(server).stdout


def test_backups_and_verify_speak_json(sqlite_server):
    server = sqlite_server
    assert json.loads(server.inv("backups", "--json").stdout)["backups"] == []
    server.inv("backup")
    doc = json.loads(server.inv("backups", "--json").stdout)
    assert doc["schema"] == 1 and doc["server"] == "hst.django"
    private, shared = doc["backups"]
    assert private["where"] == "private" and shared["where"] == "shared"
    assert private["verified"] == "ok" and private["engine"] == "sqlite" and private["counts"]["references"] == 4
    assert private["age_seconds"] >= 0 and private["size"] > 0
    dump = next(server.private_backups()[0].glob("database.*"))
    dump.write_bytes(dump.read_bytes()[:-10])
    result = server.inv("verify", "--json", check=False)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["schema"] == 1 and doc["ok"] == 1 and doc["bad"] == 1 and doc["deep"] is True
    assert doc["backups"][0]["verified"] == "BAD" and doc["backups"][0]["problems"]
    assert doc["backups"][1]["verified"] == "ok"


def test_a_backup_named_with_a_same_second_suffix_is_found_by_its_name(sqlite_server):
    import shutil

    server = sqlite_server
    server.inv("backup")
    (first,) = server.private_backups()
    twin = first.parent / f"{first.name}-1"  # what a second backup within the same second is named
    shutil.copytree(first, twin)
    dump = next(twin.glob("database.*"))
    dump.write_bytes(dump.read_bytes()[:-10])
    result = server.inv("verify", "-b", twin.name, check=False)
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "no backup matches" not in said and "BAD" in said and twin.name in said
    # the name alone, not the newest of its prefix: the good one is verified (Ops.inv raises on exit 1)
    said = server.inv("verify", "-b", first.name).stdout
    assert str(first) in said and twin.name not in said and "1 ok, 0 bad" in said, said


DOCUMENTED = {  # README "JSON output", in the order printed
    "": ["schema", "server", "state", "exit", "up", "pid", "answers", "problem", "maintenance", "context", "counts",
         "backup", "verified_backup", "shared", "last_backup", "last_restore", "last_mirror", "runtests", "check_cache",
         "thresholds", "warnings", "cron_paused_until", "release", "pitr", "offsite"],
    "server": ["name", "observatory", "kind", "tier", "host", "url", "local_url", "database"],
    "database": ["engine", "name"],
    "backup": ["name", "path", "where", "created", "age_seconds", "verified", "problems", "size", "purpose"],
    "run": ["at", "age_seconds", "result", "error", "seconds", "by", "flags", "touched"],
    "check": ["at", "age_seconds", "ok", "summary", "result"],
    "thresholds": ["backup_max_age", "shared_max_age", "runtests_max_age", "check_cache_max_age", "binlog_max_lag"],
}


def documented_keys(doc: dict) -> dict:
    """The keys of each part of a status document, as DOCUMENTED names the parts."""
    return {"": list(doc), "server": list(doc["server"]), "database": list(doc["server"]["database"]),
            "backup": list(doc["verified_backup"]), "run": list(doc["last_restore"]),
            "check": list(doc["runtests"]), "thresholds": list(doc["thresholds"])}


def test_the_status_document_is_a_record_that_round_trips(sqlite_server):
    """What `inv status --json` prints is exactly its record's JSON; read back, it is the same record."""
    from crdsops.data import state
    from crdsops.data.state import StatusDocument
    from crdsops.remote import fleet
    from crdsops.remote.ssh import Target
    from crdsops.runtime.outcomes import RestoreOutcome
    from crdsops.runtime.results import CacheCheckResult, RuntestsResult

    server = sqlite_server
    server.inv("backup")
    server.inv("restore", "--yes")  # a last restore, and the quick cache check it ends with
    server.inv("runtests", "--live-only")
    printed = server.inv("status", "--json").stdout
    host = json.loads(printed)
    assert documented_keys(host) == DOCUMENTED
    assert all(list(host[k]) == DOCUMENTED["backup"] for k in ("backup", "shared"))
    assert list(host["last_backup"]) == DOCUMENTED["run"] and list(host["check_cache"]) == DOCUMENTED["check"]
    doc = StatusDocument.from_dict(host)
    assert json.dumps(doc.as_dict(), indent=2) + "\n" == printed  # the same keys, in the same order, same values
    assert doc.pid == server.pid() and doc.answers and doc.exit == 0 and doc.thresholds.backup_max_age == 26 * 3600
    assert doc.server.name == "hst.django" and doc.state == "ok" and doc.up and doc.counts.references == 4
    assert doc.verified_backup.verified == "ok" and doc.verified_backup.created.tzinfo is not None
    assert doc.shared.where == "shared" and doc.last_backup.ok and doc.last_mirror is None
    assert isinstance(doc.last_restore.outcome("restore"), RestoreOutcome)
    assert doc.last_restore.outcome("restore").safety_backup is not None
    assert isinstance(doc.runtests.result, RuntestsResult) and doc.runtests.result.passed > 0
    assert isinstance(doc.check_cache.result, CacheCheckResult) and doc.check_cache.result.checked > 0

    report = state.report(server.cfg)  # the same server, read in this process
    assert StatusDocument.from_dict(json.loads(json.dumps(report.as_dict()))) == report.document()

    newer = dict(host, added_later=[1], server=dict(host["server"], region="b"),
                 last_restore=dict(host["last_restore"], host_of_run="x"))
    assert StatusDocument.from_dict(newer) == doc  # a newer host's added keys are ignored

    # fleet-status reads it as the record and prints it as the host did
    answer = fleet.HostResult(Target(host="127.0.0.9", label="django"), 0, "", printed)
    seen = fleet.ServerState(answer, "hst", fleet._status_document(answer))
    assert seen.report == doc and seen.as_dict()["status"] == host
