"""Units of the releases: the names' order, the destructive-migration rule, the stack stamp's name."""

from __future__ import annotations

import json

import pytest

from crdsops.errors import CrdsOpsError
from crdsops.runtime import preflight, releases
from crdsops.stack import build


def test_the_stamp_read_is_the_one_the_stack_builder_writes():
    assert releases.STACK_STAMP == build.STAMP


def test_a_new_name_sorts_after_every_release_even_within_one_second(ops):
    cfg = ops.config("hst", "django")
    first = releases.new_name(cfg, "a" * 40)
    (cfg.layout.releases / first).mkdir(parents=True)
    (cfg.layout.releases / first / "release.json").write_text(json.dumps({"name": first, "revision": "a" * 40}))
    second = releases.new_name(cfg, "0" * 40)  # a sha that sorts first, made in the same second
    assert second > first and second.endswith("-0000000")


PLAN = """Planned operations:
catalog.0002_catalogfile_note
    Add field note to catalogfile
catalog.0003_remove_catalogfile_note
    Remove field note from catalogfile
    Raw SQL operation -> DROP TABLE x
"""


def test_the_plan_is_parsed_and_only_what_changes_what_exists_refuses(monkeypatch):
    class Result:
        ok, stdout = True, PLAN

    monkeypatch.setattr(preflight, "manage", lambda *a, **k: Result())
    planned = preflight.planned_migrations(None)
    assert [m.name for m in planned] == ["catalog.0002_catalogfile_note", "catalog.0003_remove_catalogfile_note"]
    preflight.refuse_destructive(planned[:1], allow=False)  # additive: no refusal
    with pytest.raises(CrdsOpsError, match="Remove field note from catalogfile.*--allow-destructive"):
        preflight.refuse_destructive(planned, allow=False)
    preflight.refuse_destructive(planned, allow=True)


def test_a_replay_commits_in_batches_drops_gtids_and_commits_before_each_rollback():
    """crdsops.data.binlogs.batched: mariadb-binlog's ROLLBACK at each file's start and at the end
    would roll an open batch back: a batch is committed before it."""
    from crdsops.data.binlogs import batched

    def transaction(n):
        return [b"/*M!100001 SET @@session.gtid_seq_no=%d*//*!*/;\n" % n, b"START TRANSACTION\n", b"/*!*/;\n",
                b"BINLOG 'row %d'/*!*/;\n" % n, b"COMMIT/*!*/;\n"]

    stream = [b"DELIMITER /*!*/;\n", b"ROLLBACK/*!*/;\n", *transaction(1), *transaction(2), *transaction(3),
              b"ROLLBACK/*!*/;\n", *transaction(4), b"DELIMITER ;\n", b"ROLLBACK /* added by mysqlbinlog */;\n"]
    seen = {}
    out = b"".join(batched(stream, size=2, seen=seen)).decode()
    assert "gtid_seq_no" not in out and seen["transactions"] == 4
    assert out.count("START TRANSACTION") == 3  # rows 1-2, row 3 (cut by the next file's ROLLBACK), row 4
    assert out.count("BINLOG 'row") == 4 and out.index("BINLOG 'row 3'") < out.index("COMMIT/*!*/;\nROLLBACK/*!*/;")
    assert out.endswith("COMMIT;\nROLLBACK /* added by mysqlbinlog */;\n"), out
