"""Two servers on this machine: hst test (the source, reached only through SSH on
127.0.0.2) and hst dev (the destination, where `inv mirror` runs)."""

from __future__ import annotations

import pytest

from vms import Fleet, make_latest_backup


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
