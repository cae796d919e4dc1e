"""Two servers on this machine: hst test (the source, reached only through SSH on
127.0.0.2) and hst dev (the destination, where `inv mirror` runs)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from vms import Fleet


def sha256_tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_latest_backup(config, mutate=None) -> Path:
    """The source's shared latest backup: a consistent SQLite copy and its manifest.

    (Stands in for `inv backup` until issue 5's backup lands; same contract: manifest
    last, under a temporary name, renamed into place.)
    """
    shared = Path(config.backups.shared_dir)
    final = shared / config.name
    tmp = shared / f".{config.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "database.sqlite3"
    src = sqlite3.connect(config.database.name)
    dst = sqlite3.connect(db)
    src.backup(dst)
    if mutate:
        mutate(dst)
        dst.commit()
    dst.close()
    src.close()
    files = {"database.sqlite3": {"sha256": hashlib.sha256(db.read_bytes()).hexdigest(), "size": db.stat().st_size}}
    (tmp / "manifest.json").write_text(json.dumps({"observatory": config.observatory, "kind": config.kind,
                                                   "files": files}))
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


class Pair(Fleet):
    def __init__(self, where):
        super().__init__(where)
        self.src_cfg = self.ops["test"].config("hst", "test")
        self.dst_cfg = self.ops["dev"].config("hst", "dev")

    def mirror(self, *args, timeout=300):
        return self.ops["dev"].inv("mirror", "--obs", "hst", "--src", "test", *args, check=False, timeout=timeout)

    def counts(self, kind):
        from crdsops import health

        cfg = self.src_cfg if kind == "test" else self.dst_cfg
        return health.rpc(cfg.local_url, "get_catalog_counts")


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    src, dst = p.ops["test"], p.ops["dev"]
    try:
        src.inv("install", "--obs", "hst", "--kind", "test")
        src.inv("manage", "--", "seed_demo")
        src.inv("run")
        make_latest_backup(p.src_cfg)
        dst.inv("install", "--obs", "hst", "--kind", "dev")
        dst.inv("run")
        yield p
    finally:
        src.inv("stop", check=False)
        dst.inv("stop", check=False)
        p.lab.close()
