"""`inv check-cache --repair`: files fetched again from a source server over real SSH/rsync, orphans quarantined."""

from __future__ import annotations

import json

import pytest
from cachelab import add_references, flip_byte
from vms import Fleet


@pytest.fixture
def fleet(tmp_path):
    """hst test (the source, its sshd on 127.0.0.2) and hst dev, both installed with the same demo catalog."""
    f = Fleet(tmp_path)
    try:
        for kind in ("test", "dev"):
            f.ops[kind].inv("install", "--obs", "hst", "--kind", kind)
            f.ops[kind].inv("manage", "--", "seed_demo")
        yield f
    finally:
        f.close()


def check(fleet, *args):
    return fleet.ops["dev"].inv("check-cache", *args, check=False, timeout=120)


def test_repair_fetches_missing_truncated_and_damaged_files_over_ssh_and_quarantines_orphans(fleet):
    dev = fleet.ops["dev"].config("hst", "dev")
    refs = dev.layout.references
    names = sorted(p.name for p in refs.iterdir())
    (refs / names[0]).unlink()
    (refs / names[1]).write_bytes(b"short")
    flip_byte(refs / names[2])
    orphan = refs / "orphan_only_here.fits"
    orphan.write_bytes(b"mine")
    src = fleet.ops["test"].config("hst", "test").layout.references
    expected = {n: (src / n).read_bytes() for n in names}

    # without --src: refused before anything changes
    refused = check(fleet, "--sha1", "--repair")
    assert refused.returncode == 1 and "--src KIND" in refused.stderr
    assert orphan.exists() and not (refs / names[0]).exists()

    dry = check(fleet, "--sha1", "--repair", "--src", "test", "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert f"  - fetch references/hst/{names[0]} from hst.test (missing)\n" in dry.stdout
    assert f"  - fetch references/hst/{names[2]} from hst.test (damaged)\n" in dry.stdout
    assert "  - move orphan references/hst/orphan_only_here.fits to " in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert orphan.exists() and not (refs / names[0]).exists()

    fixed = check(fleet, "--sha1", "--repair", "--src", "test", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    doc = json.loads(fixed.stdout)
    assert sorted(doc["repair"]["fetched"]) == sorted(names[:3])
    assert doc["problems"] == []
    for n in names:
        assert (refs / n).read_bytes() == expected[n], n
    assert not orphan.exists()
    (moved,) = doc["repair"]["quarantined"]
    assert moved.startswith(str(dev.cache / "quarantine")) and open(moved, "rb").read() == b"mine"
    assert not list(refs.glob(".*"))  # rsync's temporary names are gone
    audit = json.loads(dev.layout.audit_log.read_text().splitlines()[-1])
    assert audit["task"] == "check-cache" and audit["touched"]["fetched"] == 3
    assert audit["touched"]["source"] == "hst.test"

    again = check(fleet, "--sha1")
    assert again.returncode == 0, again.stdout


def test_a_file_the_source_lacks_too_stays_a_problem(fleet):
    dev = fleet.ops["dev"].config("hst", "dev")
    src = fleet.ops["test"].config("hst", "test")
    name = sorted(p.name for p in dev.layout.references.iterdir())[0]
    (dev.layout.references / name).unlink()
    (src.layout.references / name).unlink()
    result = check(fleet, "--repair", "--src", "test")
    assert result.returncode == 1
    assert f"missing     references/hst/{name}" in result.stdout
    assert "still bad after the fetch" in result.stdout


def test_quarantine_is_capped(fleet):
    dev = fleet.ops["dev"].config("hst", "dev")
    for i in range(3):
        (dev.layout.references / f"orphan{i}.fits").write_bytes(b"x")
    result = check(fleet, "--repair", "--max-quarantine", "2")
    assert result.returncode == 1
    assert "3 orphans, more than the cap of 2; quarantine refused" in result.stderr
    assert all((dev.layout.references / f"orphan{i}.fits").exists() for i in range(3))
    ok = check(fleet, "--repair")
    assert ok.returncode == 0, ok.stderr
    assert "moved 3 orphan(s) to" in ok.stdout


def test_many_files_repaired_in_one_rsync(fleet):
    dev = fleet.ops["dev"].config("hst", "dev")
    src = fleet.ops["test"].config("hst", "test")

    class Side:
        def __init__(self, cfg):
            self.cfg, self.refs = cfg, cfg.layout.references

    names = add_references(Side(src), 40, size=3000, prefix="many")
    add_references(Side(dev), 40, size=3000, prefix="many")
    for n in names[:20]:
        (dev.layout.references / n).unlink()
    result = check(fleet, "--repair", "--src", "test", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["repair"]["fetched"]) == 20
