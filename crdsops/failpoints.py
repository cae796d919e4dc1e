"""Named points where tests make a task die, fail or be interrupted on purpose (no effect unless asked).

``CRDSOPS_FAILPOINT`` holds ``name=action`` pairs separated by commas; the action is
``kill`` (SIGKILL this process, as a power cut or an OOM kill would), ``fail`` (raise a
CrdsOpsError), or ``sigint``/``sigterm``/``sighup`` (send this process that signal, as an
operator's Ctrl-C, a ``kill`` or a closed terminal would). Example:
``CRDSOPS_FAILPOINT=backup.dumped=kill``. Operators never set it.
"""

from __future__ import annotations

import os
import signal
import time

from crdsops.errors import CrdsOpsError

_SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sighup": signal.SIGHUP}


def _wanted() -> dict[str, str]:
    spec = os.environ.get("CRDSOPS_FAILPOINT", "")
    pairs = (item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {name.strip(): action.strip() for name, action in pairs}


def hit(name: str) -> None:
    action = _wanted().get(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "fail":
        raise CrdsOpsError(f"failpoint {name} (CRDSOPS_FAILPOINT) made this step fail")
    elif action in _SIGNALS:
        os.kill(os.getpid(), _SIGNALS[action])
        time.sleep(0.5)  # the handler runs in the main thread; a worker thread waits for it here


def active(name: str) -> bool:
    return name in _wanted()
