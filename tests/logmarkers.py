"""Numbered requests that each leave one line in a server's log, and that log read across its rotations.

    with Markers(url) as markers:
        ...  # rotate
    seen = numbers_in(log_lines(logs, "server.log"))
    assert sorted(seen) == sorted(markers.sent)   # none lost, none written twice
"""

from __future__ import annotations

import gzip
import itertools
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

MARKED = re.compile(r"GET /robots\.txt\?line=(\d+) ")


class Markers:
    """Numbered requests from a few threads, each as fast as the server answers: one log line each.

    As many lines as the server can write, so that one falls in any short moment of a rotation
    where a line could be lost (copytruncate's between the copy and the truncation)."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.stop, self.numbers = url, threading.Event(), itertools.count()
        self.sent: list[int] = []
        self.threads = [threading.Thread(target=self.work, daemon=True) for _ in range(threads)]

    def work(self):
        while not self.stop.is_set():
            n = next(self.numbers)
            try:
                urllib.request.urlopen(f"{self.url}/robots.txt?line={n}", timeout=30).close()
            except urllib.error.HTTPError:
                pass  # a 404, logged like any other request
            self.sent.append(n)

    def __enter__(self):
        for each in self.threads:
            each.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for each in self.threads:
            each.join(35)


def log_lines(logs: Path, name: str) -> list[str]:
    """Every line of log ``name``: the live file and each rotated one (compressed or not)."""
    lines = []
    for path in sorted(logs.glob(f"{name}*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", errors="replace") as handle:
            lines += handle.read().splitlines()
    return lines


def numbers_in(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for m in map(MARKED.search, lines) if m]


def lost(markers: Markers, lines: list[str]) -> str:
    """'' when every numbered request left exactly one line, else what is wrong."""
    seen = numbers_in(lines)
    missing = sorted(set(markers.sent) - set(seen))
    if missing:
        return f"{len(missing)} of {len(markers.sent)} lines lost: {missing[:10]}"
    if sorted(seen) != sorted(markers.sent):
        return f"{len(seen) - len(markers.sent)} lines more than requests"
    return ""
