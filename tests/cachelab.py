"""Helpers for the cache-check tests (tests/cache): one installed server's cache, ways to damage it."""

from __future__ import annotations

import json
import sqlite3

from support import Ops


class Cache:
    """One installed server and ways to damage and inspect its cache."""

    def __init__(self, ops: Ops):
        self.ops = ops
        self.cfg = ops.config("hst", "django")
        self.refs = self.cfg.layout.references
        self.maps = self.cfg.layout.mappings

    def inv(self, *args, check=False, **kwargs):
        return self.ops.inv(*args, check=check, **kwargs)

    def check(self, *args, **kwargs):
        return self.inv("check-cache", *args, **kwargs)

    def json(self, *args):
        result = self.check("--json", *args)
        return result, json.loads(result.stdout)

    def catalog(self) -> dict[str, tuple]:
        con = sqlite3.connect(self.cfg.database.name)
        try:
            return {r[0]: r[1:] for r in con.execute(
                "SELECT name, filekind, size, sha1sum, rejected, blacklisted FROM catalog_catalogfile")}
        finally:
            con.close()

    def references(self) -> list[str]:
        return sorted(n for n, r in self.catalog().items() if r[0] == "reference" and not r[3] and not r[4])

    def mappings(self) -> list[str]:
        return sorted(n for n, r in self.catalog().items() if r[0] == "mapping")


def add_references(cache: Cache, count: int, size: int = 1000, prefix: str = "zz") -> list[str]:
    """``count`` more references of ``size`` bytes, in the cache and in the catalog (rows inserted directly)."""
    import hashlib
    import random

    rng = random.Random(count * 7 + size)
    rows = []
    for i in range(count):
        name = f"{prefix}{i:06d}_drk.fits"
        data = rng.randbytes(size)
        (cache.refs / name).write_bytes(data)
        rows.append((name, "hst", "reference", "acs", "darkfile", size, hashlib.sha1(data).hexdigest(),
                     "delivered", 0, 0, "2026-01-01 00:00:00", ""))
    con = sqlite3.connect(cache.cfg.database.name)
    try:
        con.executemany("INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, "
                        "sha1sum, state, blacklisted, rejected, delivery_date, description) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.commit()
    finally:
        con.close()
    return [r[0] for r in rows]


def flip_byte(path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
