"""An interrupted cache sync resumes: the next mirror does not send again what arrived before."""

from __future__ import annotations

import threading
import time

from vms import sha256_tree


def _sent(cfg) -> set[str]:
    log = cfg.layout.mirror_work / "cache.rsync.log"
    return {line.split(" ", 2)[2] for line in log.read_text().splitlines() if line[:1] in "<>c" and line[1:2] == "f"}


def test_interrupted_transfer_resumes_without_resending(pair):
    src, dst = pair.src_cfg, pair.dst_cfg
    refs = src.cache / "references" / "hst"
    for i in range(120):
        (refs / f"bulk_{i:04d}.fits").write_bytes(bytes([i % 256]) * 100_000)
    pair.ops["test"].inv("backup")
    here = dst.cache / "references" / "hst"
    cut = threading.Event()

    def cutter():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(list(here.glob("bulk_*.fits"))) >= 20:
                pair.test_host.cut()
                cut.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=cutter)
    thread.start()
    first = pair.mirror("--yes", "--bwlimit", "2000")  # about 20 files a second: the cut lands mid-way
    thread.join()
    assert cut.is_set()
    assert first.returncode == 1 and "cache sync" in first.stderr and "resumes where this one stopped" in first.stderr
    done = {f"references/hst/{p.name}" for p in here.glob("bulk_*.fits")}
    assert 20 <= len(done) < 120

    again = pair.mirror("--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    sent = _sent(dst)
    assert not sent & done, sorted(sent & done)[:5]  # nothing that had arrived is sent again
    assert {f"references/hst/bulk_{i:04d}.fits" for i in range(120)} <= sent | done
    assert sha256_tree(here) == sha256_tree(refs)
    assert not list(here.glob(".crdsops-partial/*"))  # a resumed partial file is moved into place
