"""``inv releases``: the releases of a server with when and by whom each was switched in.

The switches come from the audit log (the ``upgrade`` and ``rollback`` lines whose outcome
says which release served afterwards), so the listing shows who did it, not only that it
happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdsops.config.model import ServerConfig
from crdsops.records import Record
from crdsops.runtime import audit, releases
from crdsops.runtime.outcomes import ReleaseOutcome, read

SCHEMA = 1


@dataclass(frozen=True)
class Switch(Record):
    at: str
    by: str
    task: str  # upgrade | rollback


@dataclass(frozen=True)
class Listed(Record):
    release: releases.Release
    current: bool
    switched_in: tuple[Switch, ...] = ()


@dataclass(frozen=True)
class Listing(Record):
    server: str
    current: str  # "" : the checkout serves (no release yet)
    releases: tuple[Listed, ...] = ()
    schema: int = SCHEMA

    def text(self) -> str:
        if not self.releases:
            return (f"{self.server}: no releases yet; the checkout's code serves "
                    "(`inv upgrade` adopts it as the first release)")
        lines = [f"{'':2}{'release':27} {'revision':9} {'switched in (UTC)':20} {'by':12} subject"]
        for item in self.releases:
            r, last = item.release, (item.switched_in[-1] if item.switched_in else None)
            when = last.at.replace("T", " ")[:19] if last else ("adopted" if r.adopted else "never")
            lines.append(f"{'*' if item.current else ' ':2}{r.name:27} {r.short:9} {when:20} "
                         f"{(last.by if last else r.created_by):12} {r.subject}"
                         + (" (modified checkout)" if r.dirty else ""))
        return "\n".join(lines)


def listing(config: ServerConfig) -> Listing:
    serving = releases.current(config)
    switches = _switches(config)
    items = tuple(Listed(r, serving is not None and r.name == serving.name, tuple(switches.get(r.name, ())))
                  for r in releases.all_releases(config))
    return Listing(config.name, serving.name if serving else "", items)


def _switches(config: ServerConfig) -> dict[str, list[Switch]]:
    found: dict[str, list[Switch]] = {}
    for entry in audit.history(config.layout, limit=None):
        if entry.task not in ("upgrade", "rollback") or not entry.ok:
            continue
        outcome = read(entry.task, entry.touched)
        if isinstance(outcome, ReleaseOutcome) and outcome.switched and outcome.serving:
            found.setdefault(outcome.serving, []).append(Switch(entry.at, entry.who.user or "?", entry.task))
    return found


@dataclass(frozen=True)
class Serving(Record):
    """``inv status``'s release: what serves, and when and by whom it was switched in."""

    name: str
    revision: str
    subject: str = ""
    switched_at: str = ""
    switched_by: str = ""

    def describe(self) -> str:
        return f"{self.name} ({self.subject}), switched in {self.switched_at.replace('T', ' ')[:19]} UTC by {self.switched_by}"


def serving(config: ServerConfig) -> Serving | None:
    """The release that serves (None: the checkout's code, no release yet)."""
    release = releases.current(config)
    if release is None:
        return None
    switched = _switches(config).get(release.name, [])
    last = switched[-1] if switched else None
    return Serving(release.name, release.revision, release.subject, last.at if last else release.created,
                   last.by if last else release.created_by)
