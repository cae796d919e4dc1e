"""The catalog-driven sync puts each fetched file in place in one step (real sshd and rsync).

While a sync replaces files under their names, a reader (its own process, as a client's
download is) loops over those names: it must never find one missing or holding anything but
the whole old or the whole new content. The old contents wait at the incoming names until
``remove_replaced`` (a mirror calls it once the new state serves), then they are gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sshd import SshLab

from crdsops.remote import catalog_sync, rsync
from crdsops.remote.ssh import Target

N_REPLACED, N_NEW, SIZE = 600, 20, 16_384

READER = textwrap.dedent("""
    import os, sys, time
    live, names, size, stop = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
    expected = {size: b"A", size + 100: b"B"}  # the whole old content, the whole new one
    reads = bad = 0
    while not os.path.exists(stop):
        for name in names:
            try:
                with open(os.path.join(live, name), "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                bad += 1
                print(f"missing {name}", flush=True)
                continue
            reads += 1
            byte = expected.get(len(data))
            if byte is None or data != byte * len(data):
                bad += 1
                print(f"partial {name}: {len(data)} bytes", flush=True)
    print(f"reads {reads} bad {bad}", flush=True)
""")


def _listing(path: Path, tree: Path) -> Path:
    lines = ["# name\tsize\tmtime_ns\tsha1"]
    for p in sorted(tree.iterdir()):
        st = p.stat()
        lines.append(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\tabc")
    path.write_text("\n".join(lines) + "\n")
    return path


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_replaced_files_are_never_missing_nor_partial_and_their_old_contents_go_later(tmp_path):
    lab = SshLab(tmp_path / "ssh")
    host = lab.host("127.0.0.2")
    try:
        src_root, live_root, work = tmp_path / "src", tmp_path / "live", tmp_path / "work"
        src, live = src_root / "references" / "hst", live_root / "references" / "hst"
        src.mkdir(parents=True)
        live.mkdir(parents=True)
        names = [f"r{i:04d}.fits" for i in range(N_REPLACED)]
        old_time, new_time = 1_700_000_000, 1_700_000_500
        for name in names:
            (live / name).write_bytes(b"A" * SIZE)  # here: the old content
            os.utime(live / name, (old_time, old_time))
            (src / name).write_bytes(b"B" * (SIZE + 100))  # the source rewrote every one of them
            os.utime(src / name, (new_time, new_time))
        for i in range(N_NEW):
            (src / f"new{i:02d}.fits").write_bytes(b"n" * 10)
        listing = _listing(tmp_path / "references.tsv", src)
        target = Target(host=host.address, user="root", port=host.port, key=lab.client_key,
                        known_hosts=lab.known_hosts)

        stop = tmp_path / "stop-reading"
        reader = subprocess.Popen([sys.executable, "-c", READER, str(live), ",".join(names), str(SIZE), str(stop)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)  # reading before the sync starts
            result = catalog_sync.pull_listed(rsync.Pull(target, str(src_root), live_root),
                                              {"references/hst": listing}, work)
            time.sleep(0.3)
        finally:
            stop.write_text("")
            said = reader.communicate(timeout=60)[0]
        assert "bad 0" in said and not said.startswith(("missing", "partial")), said[:2000]
        assert int(said.split("reads ")[1].split()[0]) > 2 * N_REPLACED  # it read through the sync

        assert result.complete and result.fetch == N_REPLACED + N_NEW
        assert all((live / name).read_bytes() == b"B" * (SIZE + 100) for name in names)
        assert (live / "new00.fits").read_bytes() == b"n" * 10
        # the old contents were exchanged out, not freed on the way: they wait at the incoming names
        incoming = live_root / catalog_sync.INCOMING_DIR
        assert sorted(result.replaced) == sorted(incoming / "references" / "hst" / n for n in names)
        assert all(p.read_bytes() == b"A" * SIZE for p in result.replaced)
        assert result.remove_replaced() == N_REPLACED
        assert _files_under(incoming) == [] and result.replaced == []
        assert len(_files_under(live_root)) == N_REPLACED + N_NEW  # nothing else left there
    finally:
        lab.close()


def test_what_an_earlier_sync_left_incoming_is_reused_or_removed(tmp_path):
    """Left incoming by a cut sync: a complete file this sync fetches is placed without being sent again;
    anything else (an old content never removed, even under a name fetched again; a name no longer
    fetched) is removed, never placed."""
    lab = SshLab(tmp_path / "ssh")
    host = lab.host("127.0.0.2")
    try:
        src_root, live_root, work = tmp_path / "src", tmp_path / "live", tmp_path / "work"
        src = src_root / "references" / "hst"
        src.mkdir(parents=True)
        (live_root / "references" / "hst").mkdir(parents=True)
        for name in ("a.fits", "b.fits"):
            (src / name).write_bytes(name.encode() * 100)
            os.utime(src / name, (1_700_000_000, 1_700_000_000))
        incoming = live_root / catalog_sync.INCOMING_DIR / "references" / "hst"
        incoming.mkdir(parents=True)
        (incoming / "a.fits").write_bytes((src / "a.fits").read_bytes())  # arrived whole before the cut
        os.utime(incoming / "a.fits", (1_700_000_000, 1_700_000_000))
        (incoming / "stale.fits").write_bytes(b"an old content nobody removed")
        # c.fits: rewritten since (v2 here), listed as v3, gone from the source since its backup;
        # the v1 a killed sync exchanged out must not come back
        live_c = live_root / "references" / "hst" / "c.fits"
        live_c.write_bytes(b"v2" * 10)
        (incoming / "c.fits").write_bytes(b"v1" * 10)
        listing = _listing(tmp_path / "references.tsv", src)
        with open(listing, "a") as handle:
            handle.write(f"c.fits\t30\t{1_700_000_900 * 10**9}\tabc\n")
        target = Target(host=host.address, user="root", port=host.port, key=lab.client_key,
                        known_hosts=lab.known_hosts)
        result = catalog_sync.pull_listed(rsync.Pull(target, str(src_root), live_root),
                                          {"references/hst": listing}, work)
        assert result.sent == ["references/hst/b.fits"]  # a.fits was not sent again
        assert "references/hst/c.fits" not in result.sent  # the source lost it since its backup
        assert (live_root / "references" / "hst" / "a.fits").read_bytes() == b"a.fits" * 100
        assert live_c.read_bytes() == b"v2" * 10
        assert _files_under(live_root / catalog_sync.INCOMING_DIR) == []
    finally:
        lab.close()
