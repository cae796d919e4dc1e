"""Context names: the states (operational, edit, ...), dates against the history, and the
symbolic specifications the crds client accepts (crds.core.config.CONTEXT_RE):

    hst_0001.pmap, hst_acs_0001.imap, ...         literal mapping names
    hst-operational, hst-latest, hst-edit, hst-build, hst-versions, latest, operational, edit
    2030-01-01T00:00:00, hst-2030-01-01[T00:00:00]  the context in operation at that date (UTC)
    hst-acs-<date|state>, hst-acs-darkfile-<date|state>   the .imap / .rmap of that context
"""
import datetime
import re

from django.conf import settings

from . import queries
from .errors import RpcError, UnknownContext
from .filenames import MAPPING_EXTENSIONS
from .models import ContextHistory

STATES = ("operational", "latest", "edit", "build", "versions")
DATE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d:\d\d(?:\.\d+)?)?"
_SPEC = re.compile(rf"(?:(?P<names>[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*?)-)?(?P<when>{DATE}|{'|'.join(STATES)})", re.I)


def by_state(state=None):
    """The context of `state`: operational (also latest, build, versions here) or edit."""
    state = (state or "latest").lower()
    if state not in STATES:
        raise RpcError(f"unknown context state {state!r}; expected one of {', '.join(STATES)}")
    context = queries.edit_context() if state == "edit" else queries.operational_context()
    if context is None:
        raise RpcError("no operational context has been recorded yet (`manage.py seed_demo` records one)")
    return context


def parse_date(text):
    """An aware UTC datetime for 'YYYY-MM-DD[THH:MM:SS[.ffffff]]' (T or a space)."""
    if not isinstance(text, str) or not re.fullmatch(DATE, text.strip()):
        raise RpcError(f"bad date {text!r}; expected YYYY-MM-DDTHH:MM:SS")
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError as exc:
        raise RpcError(f"bad date {text!r}: {exc}") from exc
    return when.replace(tzinfo=datetime.UTC)


def by_date(date):
    """The pipeline context in operation at `date`: the newest history entry that started at or before it.

    A date in whole seconds covers its whole second, as the history shows its dates in seconds:
    the start date the history lists for a context names that context.
    """
    when = parse_date(date)
    history = ContextHistory.objects.filter(observatory=settings.CRDS_OBSERVATORY)
    if when.microsecond == 0 and "." not in date:
        started = history.filter(start_date__lt=when + datetime.timedelta(seconds=1))
    else:
        started = history.filter(start_date__lte=when)
    entry = started.order_by("-start_date", "-id").first()
    if entry is None:
        first = history.order_by("start_date", "id").first()
        since = f"; the history starts at {first.start_date:%Y-%m-%dT%H:%M:%S}" if first else " (the history is empty)"
        raise UnknownContext(f"no {settings.CRDS_OBSERVATORY} context was in operation at {date}{since}")
    return entry.context


def resolve(spec):
    """The mapping name that context specification `spec` stands for."""
    if not isinstance(spec, str) or not spec.strip():
        raise RpcError(f"bad context {spec!r}; expected a mapping name, a state or a date")
    spec = spec.strip()
    if spec.endswith(MAPPING_EXTENSIONS):
        return spec
    match = _SPEC.fullmatch(spec)
    if not match:
        raise UnknownContext(f"{spec!r} is neither a mapping name nor a context state or date")
    when = match.group("when")
    names = (match.group("names") or settings.CRDS_OBSERVATORY).lower().split("-", 2)
    if names[0] != settings.CRDS_OBSERVATORY:
        raise RpcError(f"this server serves observatory {settings.CRDS_OBSERVATORY!r}, not {names[0]!r}")
    pmap = by_state(when) if when.lower() in STATES else by_date(when)
    if len(names) == 1:
        return pmap
    from . import rules

    return rules.nested(pmap, *names[1:])
