"""--sha1 --sample K/N slices, --resume of an interrupted pass, and the nightly line `inv schedule --check-cache` adds."""

from __future__ import annotations

import datetime
import json
import os
import stat

import pytest
from cachelab import add_references, flip_byte

from crdsops.data.cachecheck import Sample


def test_n_slices_cover_every_name_exactly_once():
    names = [f"f{i:05d}_drk.fits" for i in range(5000)]
    for n in (1, 3, 7):
        hits = {name: 0 for name in names}
        for k in range(1, n + 1):
            for name in names:
                hits[name] += Sample(k, n).covers(name)
        assert set(hits.values()) == {1}
    sizes = [sum(Sample(k, 7).covers(x) for x in names) for k in range(1, 8)]
    assert min(sizes) > 5000 / 7 * 0.8  # roughly even


def test_auto_takes_consecutive_slices_on_consecutive_days_across_new_year():
    start = datetime.date(2026, 12, 28)
    ks = [Sample.parse("auto/7", start + datetime.timedelta(days=d)).k for d in range(7)]
    assert sorted(ks) == list(range(1, 8))
    assert Sample.parse("auto").n == 7 and str(Sample.parse("3/7")) == "3/7"


def test_n_sample_runs_hash_every_file_once_and_find_a_flipped_byte_in_its_slice(cache):
    names = add_references(cache, 60)
    flip_byte(cache.refs / names[17])
    refs = {n for n, r in cache.catalog().items() if r[0] == "reference"}
    hashed_refs = 0
    found = []
    for k in range(1, 5):
        result, doc = cache.json("--sha1", "--sample", f"{k}/4")
        assert doc["mode"] == f"sha1 sample {k}/4"
        hashed_refs += doc["hashed"] - len(cache.mappings())
        found += [p["name"] for p in doc["problems"] if p["kind"] == "damaged"]
        assert result.returncode == (1 if Sample(k, 4).covers(names[17]) else 0)
    assert hashed_refs == len(refs)
    assert found == [names[17]]


def test_resume_continues_an_interrupted_pass(cache):
    names = add_references(cache, 400, size=2000)
    flip_byte(cache.refs / names[5])  # in the first batches, found before the interrupt
    flip_byte(cache.refs / names[-1])  # the last file, found by the resumed pass
    env = dict(cache.ops.env, CRDSOPS_FAILPOINT="check-cache.batch=sigint")
    saved, cache.ops.env = cache.ops.env, env
    try:
        cut = cache.check("--sha1", "--jobs", "1")
    finally:
        cache.ops.env = saved
    assert cut.returncode == 130, cut.stdout + cut.stderr
    assert "interrupted during" in cut.stderr
    progress = cache.cfg.layout.state / "check-cache.progress.json"
    saved_state = json.loads(progress.read_text())
    assert saved_state["mode"] == "sha1" and saved_state["after"] < names[-1]
    assert stat.S_IMODE(os.stat(progress).st_mode) == 0o600

    result, doc = cache.json("--sha1", "--resume")
    assert result.returncode == 1
    assert doc["resumed_after"] == saved_state["after"]
    total = len(cache.catalog())
    assert doc["hashed"] < total
    assert {p["name"] for p in doc["problems"] if p["kind"] == "damaged"} == {names[5], names[-1]}
    assert not progress.exists()  # the pass is complete

    fresh = cache.check("--sha1", "--resume")
    assert "no interrupted `sha1` pass to resume" in fresh.stdout


@pytest.fixture
def fake_crontab(tmp_path):
    book = tmp_path / "crontab.txt"
    script = tmp_path / "crontab"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then [ -f {book} ] && cat {book} || {{ echo "no crontab for root" >&2; exit 1; }}
else cat > {book}; fi
""")
    script.chmod(0o755)
    return script, book


def test_schedule_check_cache_installs_the_nightly_sample_line(cache, fake_crontab):
    script, book = fake_crontab
    cache.ops.env["CRDSOPS_CRONTAB"] = str(script)
    out = cache.inv("schedule", "--check-cache", "--slices", "5", check=True).stdout
    cache.inv("schedule", check=True)
    lines = book.read_text().splitlines()
    ours = [x for x in lines if x.endswith("# crdsops check-cache hst.django")]
    assert len(ours) == 1 and ours[0] in out
    assert ours[0].startswith("47 4 * * * ") and " check-cache --sha1 --sample auto/5 >> " in ours[0]
    assert str(cache.cfg.layout.check_cache_log) in ours[0]
    assert any(x.endswith("# crdsops backup hst.django") for x in lines)
    cache.inv("schedule", "--check-cache", "--remove", check=True)
    lines = book.read_text().splitlines()
    assert not any("check-cache" in x for x in lines) and any("backup hst.django" in x for x in lines)
