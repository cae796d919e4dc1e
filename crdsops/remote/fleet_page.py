"""The fleet at a glance as one self-contained HTML page (``inv fleet-status --html FILE``).

One table per observatory, one row per server; a server's state is shown by colour and in
words (ok, WARN, DOWN, FAILED, TIMEOUT, UNREACHABLE), times as ages ("5h 3m ago", the exact time in
the cell's tooltip). No script, no external style sheet, font or image: the file opens the
same from a mail attachment, a shared disk or an intranet web server.
"""

from __future__ import annotations

import datetime
import html

from crdsops import __version__
from crdsops.data.state import BackupSummary, RunSummary, StatusDocument
from crdsops.db.catalog import CatalogCounts
from crdsops.records import to_json
from crdsops.remote.fleet import ServerState
from crdsops.runtime.outcomes import MirrorOutcome
from crdsops.timefmt import age_text

COLOURS = {  # background, text: readable, and distinct for the usual colour blindness
    "ok": ("#d7f5dd", "#0b5d1e"),
    "WARN": ("#fff0c2", "#7a5200"),
    "DOWN": ("#ffd9d6", "#8f1208"),
    "FAILED": ("#ffd9d6", "#8f1208"),
    "TIMEOUT": ("#ffd9d6", "#8f1208"),
    "UNREACHABLE": ("#e4e4e4", "#333333"),
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1d1d1d; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; min-width: 60em; }
th, td { border: 1px solid #c8c8c8; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.state { font-weight: bold; text-align: center; white-space: nowrap; }
td.warn { background: #fff0c2; }
span.note { color: #666; }
ul { margin: 0; padding-left: 1.1em; }
"""


def render(fleets: dict[str, list[ServerState]], now: datetime.datetime | None = None) -> str:
    """The page for ``{observatory: [ServerState, ...]}``."""
    now = now or datetime.datetime.now(datetime.UTC)
    total = sum(len(v) for v in fleets.values())
    bad = sum(1 for v in fleets.values() for s in v if s.state != "ok")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>CRDS servers: fleet status</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>CRDS servers: fleet status</h1>",
        f'<p class="meta">made {_e(now.strftime("%Y-%m-%d %H:%M UTC"))} by crdsops {_e(__version__)} '
        f"(<code>inv fleet-status</code>): {total} server(s), "
        f"{'all ok' if not bad else f'{bad} not ok'}</p>",
    ]
    for observatory, states in fleets.items():
        parts.append(f'<h2 id="{_e(observatory)}">{_e(observatory.upper())}</h2>')
        parts.append(f'<table data-observatory="{_e(observatory)}">')
        parts.append("<thead><tr><th>server</th><th>host</th><th>state</th><th>context</th><th>catalog</th>"
                     "<th>newest verified backup</th><th>shared latest</th><th>last mirror</th>"
                     "<th>drift from its source</th><th>release</th><th>warnings</th></tr></thead><tbody>")
        for state in states:
            parts.append(_row(state))
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _row(state: ServerState) -> str:
    doc = state.report
    background, colour = COLOURS.get(state.state, COLOURS["FAILED"])
    cells = [
        f"<td>{_e(state.name)}</td>",
        f"<td>{_e(state.result.target.where)}</td>",
        f'<td class="state" style="background:{background};color:{colour}">{_e(state.state)}</td>',
        f"<td>{_e(state.context) if state.context else _note('-')}</td>",
        *(_status_cells(doc) if doc is not None else _no_status_cells()),
        f"<td>{_drift(state)}</td>",
        _release(state),
        f"<td>{_warnings(doc) if doc is not None else _e(state.result.summary)}</td>",
    ]
    return f'<tr data-server="{_e(state.name)}" data-state="{_e(state.state)}">' + "".join(cells) + "</tr>"


def _status_cells(doc: StatusDocument) -> list[str]:
    """catalog, newest verified backup, shared latest, last mirror."""
    return [
        f"<td>{_catalog(doc.counts)}</td>",
        _backup_cell(doc.verified_backup, doc.warning("backup") is not None),
        _backup_cell(doc.shared, doc.warning("shared") is not None),
        f"<td>{_mirror(doc.last_mirror)}</td>",
    ]


def _warnings(doc: StatusDocument) -> str:
    return _list(doc.warnings) if doc.warnings else _note("none")


def _no_status_cells() -> list[str]:
    return [f"<td>{_note('-')}</td>", _backup_cell(None, False), _backup_cell(None, False),
            f"<td>{_mirror(None)}</td>"]


def _catalog(counts: CatalogCounts | None) -> str:
    if counts is None:
        return _note("-")
    return f"{_or_what(counts.references)} references, {_or_what(counts.mappings)} mappings"


def _backup_cell(backup: BackupSummary | None, warn: bool) -> str:
    css = ' class="warn"' if warn else ""
    if backup is None:
        return f"<td{css}>{_note('none')}</td>"
    return f'<td{css} title="{_e(_iso(backup.created))}">{_e(_ago(backup.age_seconds))}</td>'


def _mirror(last: RunSummary | None) -> str:
    if last is None:
        return _note("never")
    outcome = last.outcome("mirror")
    source = outcome.source if isinstance(outcome, MirrorOutcome) else "?"
    result = "" if last.ok else f" <b>{_e(last.result.upper())}</b>"
    return f'<span title="{_e(_iso(last.at))}">{_e(_ago(last.age_seconds))} from {_e(source)}</span>' + result


def _release(state: ServerState) -> str:
    """Which release serves (revision, subject); marked when its observatory's servers differ."""
    release = state.release
    css = ' class="warn"' if state.release_drift else ""
    if release is None:
        return f"<td{css}>{_note('checkout (no release)')}</td>"
    title = f"{release.name}, switched in {release.switched_at} by {release.switched_by}"
    text = f"<code>{_e(release.revision[:7])}</code> {_e(release.subject)}"
    if state.release_drift:
        text += f"<br>{_note(state.release_drift)}"
    return f'<td{css} title="{_e(title)}">{text}</td>'


def _drift(state: ServerState) -> str:
    if state.drift:
        return f"vs {_e(state.source)}:" + _list(state.drift)
    if state.drift_note:
        return _note(state.drift_note)
    return f"none {_note('(vs ' + (state.source or '?') + ')')}"


def _iso(when: datetime.datetime | None) -> str:
    """A time as the status document spells it (the cell's tooltip)."""
    return to_json(when) if when is not None else ""


def _or_what(value) -> str:
    return "?" if value is None else str(value)


def _ago(seconds) -> str:
    return "?" if seconds is None else f"{age_text(seconds)} ago"


def _list(items) -> str:
    return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _note(text: str) -> str:
    return f'<span class="note">{_e(text)}</span>'


def _e(value) -> str:
    return html.escape(str(value), quote=True)
