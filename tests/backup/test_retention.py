"""Tiered retention for real: `inv backup` on a django server removes what no rule keeps, and
`inv backups` (text and --json) says why each remaining backup stays.

Older backups are real backups copied with another `created` in their manifest (the manifest
lists the other files' sha256s, not its own, so the copies still verify): retention dates by
the manifest, so this is the history a server would have after months of nightly runs.
"""

from __future__ import annotations

import datetime
import json
import shutil

from support import Ops, deep_merge, local_overrides, make_configs

# keep/keep_days/min_keep at their smallest so that what stays is the tiers' doing
TIERS = {"keep": 1, "keep_days": 0, "min_keep": 1, "keep_daily": 2, "keep_weekly": 3, "keep_monthly": 4}

# the history, newest first, in UTC and long before "now" (the periods with backups count,
# not the calendar, so the fresh backup only takes the current day, week and month)
HISTORY = {
    "old-a": "2025-03-12T10:00:00+00:00",  # Wed 2025-W11: the newest of its day, week and month
    "old-b": "2025-03-12T03:00:00+00:00",  # same day, older: nothing
    "old-c": "2025-03-10T03:00:00+00:00",  # Mon, same week and month as old-a: nothing
    "old-d": "2025-03-05T03:00:00+00:00",  # 2025-W10: the third week
    "old-e": "2025-02-20T03:00:00+00:00",  # the third month
    "old-f": "2025-01-15T03:00:00+00:00",  # the fourth month
    "old-g": "2024-12-31T23:30:00+00:00",  # a fifth month (and ISO week 2025-W01): beyond every tier
}
KEPT = {
    "old-a": ["daily 2025-03-12", "weekly 2025-W11", "monthly 2025-03"],
    "old-d": ["weekly 2025-W10"],
    "old-e": ["monthly 2025-02"],
    "old-f": ["monthly 2025-01"],
}


def _redate(backup, created: str) -> None:
    manifest = backup / "manifest.json"
    data = json.loads(manifest.read_text())
    data["created"] = data["finished"] = created
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_backup_keeps_what_the_tiers_say_and_backups_json_says_why(tmp_path):
    overrides = deep_merge(local_overrides(tmp_path), {"backups": TIERS})
    ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "django"): overrides}))
    ops.inv("install", "--obs", "hst", "--kind", "django")
    private = ops.config("hst", "django").backups.private_dir
    ops.inv("backup")
    (first,) = [p for p in private.iterdir() if not p.name.startswith(".")]
    for name, created in HISTORY.items():
        shutil.copytree(first, private / name, symlinks=True)
        _redate(private / name, created)
    shutil.rmtree(first)  # only the next backup is "now": no midnight or week end can move the tiers

    result = ops.inv("backup")
    names = sorted(p.name for p in private.iterdir() if not p.name.startswith("."))
    (new,) = [n for n in names if not n.startswith("old-")]
    assert names == sorted([new, *KEPT]), result.stderr
    for gone in set(HISTORY) - set(KEPT):
        assert f"retention: removed {private / gone}" in result.stderr + result.stdout

    doc = json.loads(ops.inv("backups", "--json").stdout)
    why = {b["name"]: b["retention"] for b in doc["backups"] if b["where"] == "private"}
    assert {name: r["reasons"] for name, r in why.items() if name != new} == KEPT
    made = datetime.datetime.fromisoformat(next(b["created"] for b in doc["backups"] if b["name"] == new))
    week = "{:04d}-W{:02d}".format(*made.isocalendar()[:2])
    assert why[new] == {"keep": True, "reasons": ["newest 1", f"daily {made:%Y-%m-%d}", f"weekly {week}",
                                                  f"monthly {made:%Y-%m}", "newest verified"]}
    assert [b["retention"] for b in doc["backups"] if b["where"] == "shared"] == [None]

    # one more old backup on old-a's day, older: the listing says the next retention removes it
    shutil.copytree(private / "old-a", private / "old-h", symlinks=True)
    _redate(private / "old-h", "2025-03-12T01:00:00+00:00")
    doc = json.loads(ops.inv("backups", "--json").stdout)
    assert [b["retention"] for b in doc["backups"] if b["name"] == "old-h"] == [{"keep": False, "reasons": []}]
    listing = ops.inv("backups").stdout
    assert any("old-h" in line and "(DELETE: no rule keeps it)" in line for line in listing.splitlines())
    assert any("old-d" in line and "(keep: weekly 2025-W10)" in line for line in listing.splitlines())
