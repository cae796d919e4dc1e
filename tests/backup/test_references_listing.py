"""A backup lists the cache's references (name, size, mtime, sha1) and hashes only what changed
since the newest backup's listing: a file whose size and mtime are unchanged keeps its sha1
(on HST, 200,000 files: reading them all again each night would take hours)."""

from __future__ import annotations

import hashlib
import os


def _listing(backup) -> dict[str, list[str]]:
    lines = (backup / "listings" / "references.tsv").read_text().splitlines()
    return {parts[0]: parts[1:] for parts in (line.split("\t") for line in lines if not line.startswith("#"))}


def test_unchanged_files_keep_their_sha1_changed_ones_are_hashed(sqlite_server):
    server = sqlite_server
    refs = server.cfg.layout.references
    same, grown = sorted(p for p in refs.iterdir() if p.is_file())[:2]
    server.inv("backup")
    first = _listing(server.private_backups()[-1])
    assert first[same.name][2] == hashlib.sha1(same.read_bytes()).hexdigest()

    # same size and mtime, other bytes: taken as unchanged, so the sha1 is the listed one
    stat = same.stat()
    same.write_bytes(bytes(b ^ 0xFF for b in same.read_bytes()))
    os.utime(same, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    grown.write_bytes(grown.read_bytes() + b"more")
    server.inv("backup")
    second = _listing(server.private_backups()[-1])
    assert second[same.name] == first[same.name]
    assert second[grown.name][2] == hashlib.sha1(grown.read_bytes()).hexdigest() != first[grown.name][2]
