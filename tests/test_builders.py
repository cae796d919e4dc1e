"""The pure builders, as tables: given these inputs, exactly this command line or SQL.

Real-service tests (sshd, rsync, MariaDB) prove the commands work; these pin down what is
built, without any service, so a change to quoting or flags shows up here first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import local_overrides, make_configs

from crdsops.config.loader import load_config
from crdsops.config.model import Database
from crdsops.db import mysql
from crdsops.db.mysql_loader import strip_secondary_keys
from crdsops.errors import CrdsOpsError
from crdsops.remote import rsync, source, ssh

BASE = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "ConnectTimeout=10",
        "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]


@pytest.mark.parametrize("target, batch, expected", [
    (ssh.Target(host="h"), True, [*BASE, "-o", "BatchMode=yes"]),
    (ssh.Target(host="h"), False, BASE),
    (ssh.Target(host="h", user="crds", port=2222), True, [*BASE, "-o", "BatchMode=yes", "-p", "2222", "-l", "crds"]),
    (ssh.Target(host="h", key=Path("/k/id"), known_hosts=Path("/k/known")), True,
     [*BASE, "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/k/known", "-o", "GlobalKnownHostsFile=/dev/null",
      "-i", "/k/id", "-o", "IdentitiesOnly=yes"]),
    (ssh.Target(host="h", gateway="jump@bastion:22"), True, [*BASE, "-o", "BatchMode=yes", "-J", "jump@bastion:22"]),
])
def test_ssh_argv(target, batch, expected):
    assert ssh.ssh_argv(target, batch=batch) == expected


@pytest.mark.parametrize("checkout, argv, expected", [
    ("/srv/crdsops", ["status"],
     "cd /srv/crdsops && if [ -x .venv/bin/inv ]; then exec .venv/bin/inv status; else exec inv status; fi"),
    ("/srv/my ops", ["backup", "--dry-run"],
     "cd '/srv/my ops' && if [ -x .venv/bin/inv ]; then exec .venv/bin/inv backup --dry-run; "
     "else exec inv backup --dry-run; fi"),
    ("/c", ["manage", "--", "shell; rm -rf /"],
     "cd /c && if [ -x .venv/bin/inv ]; then exec .venv/bin/inv manage -- 'shell; rm -rf /'; "
     "else exec inv manage -- 'shell; rm -rf /'; fi"),
])
def test_inv_command_quotes_every_word(checkout, argv, expected):
    assert ssh.inv_command(checkout, argv) == expected


def test_inv_command_exports_the_environment_quoted():
    """`fab` tells the host where the run came from; a name that is not a variable name is dropped."""
    assert ssh.inv_command("/c", ["backup"], {"CRDSOPS_VIA": "ops@ctl 1; rm -rf /", "bad name": "x"}) == (
        "cd /c && export CRDSOPS_VIA='ops@ctl 1; rm -rf /' && if [ -x .venv/bin/inv ]; then exec .venv/bin/inv "
        "backup; else exec inv backup; fi")


def test_inv_command_needs_a_checkout():
    with pytest.raises(CrdsOpsError, match="ssh.checkout"):
        ssh.inv_command(None, ["status"])


@pytest.mark.parametrize("spec, expected", [
    ("host", (None, "host", None)),
    ("crds@host", ("crds", "host", None)),
    ("crds@127.0.0.2:2222", ("crds", "127.0.0.2", 2222)),
    ("host:22", (None, "host", 22)),
])
def test_parse_host(spec, expected):
    assert ssh.parse_host(spec) == expected


@pytest.mark.parametrize("spec", ["host:ssh", "@", "crds@"])
def test_parse_host_refuses(spec):
    with pytest.raises(CrdsOpsError, match="bad host"):
        ssh.parse_host(spec)


def test_rsync_argv_pulls_each_tree_relative_over_the_checked_ssh():
    target = ssh.Target(host="src.example", user="crds", port=2200, known_hosts=Path("/k/known"))
    argv = rsync.full_pass_argv(target, "/cache/", ["references/hst", "pickles/hst/"], Path("/dest"))
    ssh_words = " ".join(ssh.ssh_argv(target))
    assert argv == ["rsync", "-a", "--protect-args", "-e", ssh_words, "-R", "-ii", "--out-format=%i %n",
                    "--partial-dir=.crdsops-partial",
                    "src.example:/cache/./references/hst/", "src.example:/cache/./pickles/hst/", "/dest/"]


def test_rsync_argv_quotes_the_ssh_command():
    target = ssh.Target(host="h", key=Path("/keys/my key"))
    argv = rsync.rsync_argv(target, "/c", Path("/d"), ["t"])
    assert "-i '/keys/my key'" in argv[argv.index("-e") + 1]


DB = Database(engine="mysql", name="crds_hst", host="db.example", port=3307, option_file=Path("/etc/crds/my.cnf"))


@pytest.mark.parametrize("build, expected", [
    (lambda: mysql.client_argv(DB), ["mysql", "--defaults-extra-file=/etc/crds/my.cnf", "--host=db.example",
                                     "--port=3307"]),
    (lambda: mysql.mysql_argv(DB, database="crds_hst_crdsops_new"),
     ["mysql", "--defaults-extra-file=/etc/crds/my.cnf", "--host=db.example", "--port=3307", "--batch",
      "--skip-column-names", "crds_hst_crdsops_new"]),
    (lambda: mysql.mysqldump_argv(DB), ["mysqldump", "--defaults-extra-file=/etc/crds/my.cnf", "--host=db.example",
                                        "--port=3307", "--single-transaction", "--quick", "--routines", "crds_hst"]),
    (lambda: mysql.mysql_restore_argv(DB, "crds_x"), ["mysql", "--defaults-extra-file=/etc/crds/my.cnf",
                                                      "--host=db.example", "--port=3307", "crds_x"]),
])
def test_mysql_argv_has_the_option_file_first_and_no_password(build, expected):
    argv = build()
    assert argv == expected
    assert not any("password" in word for word in argv)


@pytest.mark.parametrize("name", ["crds; DROP DATABASE x", "a-b", "x" * 65, "`x`"])
def test_database_names_must_be_plain_identifiers(name):
    with pytest.raises(CrdsOpsError, match="not a plain identifier"):
        mysql.mysqldump_argv(DB, database=name)


CREATE = b"""CREATE TABLE `catalog_catalogfile` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `name` varchar(128) NOT NULL,
  `sha1sum` varchar(40) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`),
  KEY `catalog_cat_sha1sum_idx` (`sha1sum`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;"""


@pytest.mark.parametrize("stmt, kept, keys", [
    (CREATE,
     b"""CREATE TABLE `catalog_catalogfile` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `name` varchar(128) NOT NULL,
  `sha1sum` varchar(40) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;""",
     [b"UNIQUE KEY `name` (`name`)", b"KEY `catalog_cat_sha1sum_idx` (`sha1sum`)"]),
    (b"CREATE TABLE `t` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;",
     b"CREATE TABLE `t` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;", []),
])
def test_strip_secondary_keys(stmt, kept, keys):
    assert strip_secondary_keys(stmt) == (kept, keys)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    where = tmp_path_factory.mktemp("direction")
    return make_configs(where, {("hst", k): local_overrides(where) for k in ("django", "dev", "test", "ops")})


@pytest.mark.parametrize("dest, src, upward_allowed, expected", [
    ("django", "dev", False, False),
    ("dev", "ops", False, False),
    ("test", "ops", False, False),
    ("test", "dev", True, True),
    ("test", "dev", False, "refusing to mirror upward: hst.dev (dev) is below hst.test (test)"),
    ("ops", "django", False, "refusing to mirror upward"),
])
def test_check_direction(configs, dest, src, upward_allowed, expected):
    d, s = load_config("hst", dest, configs), load_config("hst", src, configs)
    if isinstance(expected, bool):
        assert source.check_direction(d, s, upward_allowed) is expected
    else:
        with pytest.raises(CrdsOpsError, match=re.escape(expected)):
            source.check_direction(d, s, upward_allowed)


@pytest.mark.parametrize("obs, src, expected", [
    ("jwst", "ops", "this server is hst.test, of hst; it cannot mirror jwst.ops"),
    ("hst", "test", "the source hst.test is this server"),
])
def test_source_config_refuses_another_observatory_or_itself(configs, obs, src, expected):
    with pytest.raises(CrdsOpsError, match=re.escape(expected)):
        source.source_config(load_config("hst", "test", configs), obs, src)


def test_source_config_reads_the_destinations_configs(configs):
    src = source.source_config(load_config("hst", "test", configs), "hst", "ops")
    assert src.name == "hst.ops" and src.configs == configs.resolve()


# --- the fleet: mirror sources, drift, the page ------------------------------------------------

def _state(name, tier, exited=0, **status):
    """One host's answer as fleet-status reads it: the JSON a host's `inv status --json` prints, parsed.

    ``status``: up (True), context ("hst_0001.pmap"), refs (3), last_mirror (None).
    """
    from crdsops.remote import fleet

    obs, kind = name.split(".")
    up, refs = status.pop("up", True), status.pop("refs", 3)
    doc = {"schema": 1, "server": {"name": name, "tier": tier}, "state": "ok" if up else "down",
           "exit": 0 if up else 1, "up": up, "context": status.pop("context", "hst_0001.pmap"),
           "counts": {"references": refs, "mappings": 4, "contexts": 1},
           "last_mirror": status.pop("last_mirror", None), "warnings": [], "release": status.pop("release", None),
           "verified_backup": {"name": "20261203-0317", "path": f"/backups/{name}/20261203-0317",
                               "created": "2026-12-03T03:17:00+00:00", "age_seconds": 7200}}
    assert not status, f"unknown keys {status}"
    result = fleet.HostResult(ssh.Target(host="127.0.0.9", label=name), exited, "",
                              json.dumps(doc) if exited is not None else "")
    state = fleet.ServerState(result, obs, fleet._status_document(result))
    assert (state.report is not None) == (exited is not None), "the document parses"
    return state


@pytest.mark.parametrize("name, tier, others, last_mirror, expected", [
    ("hst.dev", "dev", [("hst.test", "test")], None, "hst.test"),
    ("hst.test", "test", [("hst.ops", "ops")], None, "hst.ops"),
    ("hst.ops", "ops", [], None, None),
    ("jwst.dit", "dev", [("jwst.cit", "test"), ("jwst.ait", "test")], None, "jwst.ait"),  # no jwst.test here
    ("jwst.dit", "dev", [("jwst.cit", "test"), ("jwst.test", "test")], None, "jwst.test"),
    ("hst.dev", "dev", [("hst.test", "test")], {"result": "ok", "touched": {"source": "hst.ops"}}, "hst.ops"),
    ("hst.dev", "dev", [("hst.test", "test")], {"result": "failed", "touched": {"source": "hst.ops"}}, "hst.test"),
])
def test_mirror_source(name, tier, others, last_mirror, expected):
    from crdsops.remote import fleet

    me = _state(name, tier, last_mirror=last_mirror)
    states = [me] + [_state(n, t) for n, t in others]
    assert fleet.mirror_source(me, states) == expected


def test_drift_names_what_differs_and_why_it_cannot_compare():
    from crdsops.remote import fleet

    ops, test, dev = _state("hst.ops", "ops", exited=None), _state("hst.test", "test"), \
        _state("hst.dev", "dev", context="hst_0000.pmap", refs=1)
    states = [ops, test, dev]
    by_name = {s.name: s for s in states if s.report}
    for each in states:
        fleet._compare(each, by_name, states)
    assert dev.source == "hst.test" and dev.drift == ["context hst_0000.pmap vs hst_0001.pmap", "references 1 vs 3"]
    assert test.drift == [] and test.drift_note == "hst.ops unreachable"
    assert ops.state == "UNREACHABLE" and ops.drift_note == "no status"
    down = _state("hst.dev", "dev", up=False)
    fleet._compare(down, by_name, [test, down])
    assert down.drift_note == "it is down"


def _release(sha: str) -> dict:
    return {"name": f"20261204T120000Z-{sha[:7]}", "revision": sha * 40 if len(sha) == 1 else sha,
            "subject": f"commit {sha}", "switched_at": "2026-12-04T12:00:00+00:00", "switched_by": "ops"}


def test_servers_of_one_observatory_on_different_revisions_are_drift():
    from crdsops.remote import fleet, fleet_page

    test, dev, old = _state("hst.test", "test", release=_release("a")), _state("hst.dev", "dev", release=_release("a")), \
        _state("hst.ops", "ops")
    fleet._release_drift([test, dev, old])
    assert test.release_drift == dev.release_drift == "" and old.release is None, "same revision: no drift"
    dev = _state("hst.dev", "dev", release=_release("b"))
    fleet._release_drift([test, dev, old])
    assert test.release_drift == "other revisions: hst.dev bbbbbbb"
    assert dev.release_drift == "other revisions: hst.test aaaaaaa"
    page = fleet_page.render({"hst": [test, dev, old]})
    assert re.search(r'<td class="warn" title="[^"]*"><code>bbbbbbb</code> commit b', page), page
    assert "checkout (no release)" in page


def test_the_page_has_one_table_per_observatory_and_escapes_what_hosts_say():
    from crdsops.remote import fleet_page

    hst = [_state("hst.test", "test"), _state("hst.dev", "dev")]
    jwst = [_state("jwst.ops", "ops", context="<b>jwst_0001.pmap</b>")]
    page = fleet_page.render({"hst": hst, "jwst": jwst})
    assert re.findall(r'<table data-observatory="([a-z]+)">', page) == ["hst", "jwst"]
    assert re.findall(r'<tr data-server="([^"]+)" data-state="ok">', page) == ["hst.test", "hst.dev", "jwst.ops"]
    assert "&lt;b&gt;jwst_0001.pmap&lt;/b&gt;" in page and "<b>jwst" not in page
    assert ">2h ago<" in page  # times as ages


NEWER = {  # a host's `inv status --json` from a newer crdsops: keys this one does not know, at every level
    "schema": 1, "added_later": {"x": 1},
    "server": {"name": "hst.dev", "observatory": "hst", "kind": "dev", "tier": "dev", "host": "dlhstcrds2",
               "url": "https://hst-crds-dev.example", "local_url": "http://127.0.0.1:8001",
               "database": {"engine": "mysql", "name": "crds_hst_dev", "replica": "db2"}, "region": "b"},
    "state": "warn", "exit": 2, "up": True, "pid": 4242, "answers": True, "problem": None,
    "context": "hst_0042.pmap", "counts": {"references": 3, "mappings": 4, "contexts": 1, "rejected": 1},
    "backup": None, "shared": None, "last_backup": None, "last_restore": None,
    "verified_backup": {"name": "20261203-0317", "path": "/b/20261203-0317", "where": "private",
                        "created": "2026-12-03T03:17:00+00:00", "age_seconds": 30 * 3600, "verified": "ok",
                        "problems": [], "size": 1234, "purpose": "backup", "encrypted": False},
    "last_mirror": {"at": "2026-12-02T04:00:00+00:00", "age_seconds": 50 * 3600, "result": "ok", "error": None,
                    "seconds": 61.5, "by": "crds (no terminal)", "flags": {"src": "ops"}, "host_of_run": "x",
                    "touched": {"source": "hst.ops", "source_host": "dlhstcrds0", "bytes_copied": 10}},
    "runtests": {"at": "2026-12-03T05:00:00+00:00", "age_seconds": 600, "ok": True, "summary": "5 passed",
                 "result": {"schema": 1, "task": "runtests", "at": "2026-12-03T05:00:00+00:00", "ok": True,
                            "seconds": 12.0, "passed": 5, "failed": 0, "summary": "5 passed", "flaky": 0}},
    "check_cache": None,
    "thresholds": {"backup_max_age": 93600, "shared_max_age": 93600, "runtests_max_age": None,
                   "check_cache_max_age": None, "binlog_max_age": 3600},
    "warnings": ["backup: the newest verified backup is 30h old, more than 26h (monitoring.backup_max_age)"],
}


def test_a_status_document_from_a_newer_host_still_parses():
    import datetime

    from crdsops.data.state import StatusDocument
    from crdsops.remote import fleet
    from crdsops.runtime.outcomes import MirrorOutcome
    from crdsops.runtime.results import RuntestsResult

    result = fleet.HostResult(ssh.Target(host="127.0.0.9", label="dev"), 2, "", json.dumps(NEWER))
    doc = fleet._status_document(result)
    assert isinstance(doc, StatusDocument) and doc.server.name == "hst.dev" and doc.server.database.name == "crds_hst_dev"
    assert doc.counts.references == 3 and doc.thresholds.backup_max_age == 93600
    assert doc.verified_backup.created == datetime.datetime(2026, 12, 3, 3, 17, tzinfo=datetime.UTC)
    assert doc.last_mirror.outcome("mirror") == MirrorOutcome(source="hst.ops", source_host="dlhstcrds0")
    assert isinstance(doc.runtests.result, RuntestsResult) and doc.runtests.result.passed == 5
    assert doc.warning("backup").startswith("the newest verified backup is 30h old") and doc.warning("shared") is None
    assert result.summary == NEWER["warnings"][0]  # the host's line says why it warns
    state = fleet.ServerState(result, "hst", doc)
    assert (state.name, state.state, state.tier, state.context, state.backup_age) == (
        "hst.dev", "WARN", "dev", "hst_0042.pmap", 30 * 3600)
    assert fleet.mirror_source(state, [state]) == "hst.ops"
    printed = state.as_dict()["status"]
    assert printed["server"]["name"] == "hst.dev" and "added_later" not in printed
    assert printed["last_mirror"]["touched"] == NEWER["last_mirror"]["touched"]  # a run's touched as the host said


@pytest.mark.parametrize("stdout", [
    "", "error: not installed", json.dumps([NEWER]), json.dumps(dict(NEWER, schema=2)),
    json.dumps({k: v for k, v in NEWER.items() if k != "server"}), json.dumps(dict(NEWER, server="hst.dev")),
    json.dumps(dict(NEWER, up="yes")), json.dumps(dict(NEWER, verified_backup={"age_seconds": 3})),
])
def test_a_status_document_that_does_not_parse_is_no_status(stdout):
    from crdsops.remote import fleet

    for exited, shown in ((0, "ok"), (1, "FAILED")):
        result = fleet.HostResult(ssh.Target(host="127.0.0.9", label="dev"), exited, "the last line", stdout)
        state = fleet.ServerState(result, "hst", fleet._status_document(result))
        assert state.report is None and state.state == shown and result.summary == "the last line"
        assert state.as_dict()["status"] is None and state.name == "dev"
        fleet._compare(state, {}, [state])
        assert state.drift_note == "no status"


def test_the_page_reads_the_mirror_backups_and_warnings_from_the_document():
    from crdsops.remote import fleet, fleet_page

    result = fleet.HostResult(ssh.Target(host="127.0.0.9", label="dev"), 2, "", json.dumps(NEWER))
    dev = fleet.ServerState(result, "hst", fleet._status_document(result))
    failed = _state("hst.test", "test", last_mirror={"at": "2026-12-03T01:00:00+00:00", "age_seconds": 90,
                                                     "result": "failed", "touched": {"source": "hst.ops"}})
    gone = _state("hst.ops", "ops", exited=None)
    page = fleet_page.render({"hst": [dev, failed, gone]})
    row = {name: re.search(rf'<tr data-server="{re.escape(name)}".*?</tr>', page).group(0)
           for name in ("hst.dev", "hst.test", "hst.ops")}
    assert '<td>3 references, 4 mappings</td>' in row["hst.dev"]
    assert '<td class="warn" title="2026-12-03T03:17:00+00:00">30h ago</td>' in row["hst.dev"]
    assert '<span title="2026-12-02T04:00:00+00:00">2d 2h ago from hst.ops</span>' in row["hst.dev"]
    assert "<li>backup: the newest verified backup is 30h old" in row["hst.dev"]
    assert '<span title="2026-12-03T01:00:00+00:00">1m ago from hst.ops</span> <b>FAILED</b>' in row["hst.test"]
    assert '<td title="2026-12-03T03:17:00+00:00">2h ago</td>' in row["hst.test"]  # no warning: no class
    assert '<span class="note">never</span>' in row["hst.ops"] and "UNREACHABLE" in row["hst.ops"]
