"""`inv mirror` syncs the cache by its source backup's listing: exactly what changed, over real SSH."""

from __future__ import annotations

from pathlib import Path

from vms import sha256_tree


def _sent(cfg, label="cache") -> list[str]:
    """What rsync itemized as sent in the last mirror (its --out-format log)."""
    log = cfg.layout.mirror_work / f"{label}.rsync.log"
    return sorted(line.split(" ", 2)[2] for line in log.read_text().splitlines()
                  if line[:1] in "<>c" and line[1:2] == "f")


def test_second_mirror_fetches_exactly_what_changed(pair):
    src, dst = pair.src_cfg, pair.dst_cfg
    first = pair.mirror("--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    refs = sorted(p.name for p in (src.cache / "references" / "hst").iterdir())
    assert _sent(dst) == [f"references/hst/{n}" for n in refs]  # a new cache: everything
    assert "by its backup's listing" in first.stdout

    src_refs = src.cache / "references" / "hst"
    changed, removed = src_refs / refs[0], src_refs / refs[1]
    changed.write_bytes(changed.read_bytes() + b"changed")
    removed.unlink()
    (src_refs / "added_after.fits").write_bytes(b"new file")
    pair.ops["test"].inv("backup")

    plan = pair.mirror("--dry-run")
    assert "rsync --files-from; the source's cache is not walked" in plan.stdout, plan.stdout
    again = pair.mirror("--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _sent(dst) == ["references/hst/added_after.fits", f"references/hst/{changed.name}"]
    assert "2 new or changed" in again.stdout and "1 not at the source" in again.stdout
    assert "deleted 1 file" in again.stdout
    assert sha256_tree(dst.cache / "references" / "hst") == sha256_tree(src_refs)

    # nothing changed: no rsync at all
    idle = pair.mirror("--yes")
    assert idle.returncode == 0, idle.stdout + idle.stderr
    assert _sent(dst) == [] and "0 new or changed" in idle.stdout


def test_deletions_capped_by_listing(pair):
    assert pair.mirror("--yes").returncode == 0
    extra = pair.dst_cfg.cache / "references" / "hst"
    for i in range(5):
        (extra / f"only_here_{i}.fits").write_bytes(b"x")
    result = pair.mirror("--yes", "--max-delete", "2")
    assert result.returncode == 1
    assert "5 files here are not at the source, more than the cap of 2" in result.stderr
    assert len(list(extra.glob("only_here_*"))) == 5


def test_listing_that_does_not_verify_is_refused(pair):
    latest = Path(pair.src_cfg.backups.shared_dir) / pair.src_cfg.name
    listing = latest / "listings" / "references.tsv"
    listing.write_text(listing.read_text() + "forged.fits\t1\t0\tabc\n")
    result = pair.mirror("--yes")
    assert result.returncode == 1
    assert "refusing backup" in result.stderr and "listings/references.tsv: size" in result.stderr
    assert pair.counts("dev")["references"] == 0


def test_full_sync_walks_both_trees(pair):
    plan = pair.mirror("--dry-run", "--full-sync")
    assert "one full rsync pass" in plan.stdout
    result = pair.mirror("--yes", "--full-sync", "--bwlimit", "100000")
    assert result.returncode == 0, result.stdout + result.stderr
    for sub in ("references/hst", "mappings/hst"):
        assert sha256_tree(pair.dst_cfg.cache / sub) == sha256_tree(pair.src_cfg.cache / sub)
