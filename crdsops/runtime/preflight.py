"""What a release must pass before it serves (``inv upgrade``, ``inv rollback``).

Each check runs the release's own code and stack (``releases.trying``) while the serving
release goes on serving; a failure is one line that says what failed:

    importable      the WSGI application imports (settings, URLs, the catalog app)
    checked         ``manage.py check --deploy``: errors refuse, warnings are shown
    migrations      ``migrate --plan`` against the live database: which migrations would run,
                    and whether one drops, alters or renames existing columns or tables (or
                    runs SQL that cannot be read): rolling the code back cannot undo that
    smoke           the release served on a loopback port against the live database read-only,
                    asked by the real crds client what a pipeline asks (``selftest.live_checks``)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import re
import socket
import tempfile
import time
from dataclasses import dataclass

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.parallel import JobsFailed, side_by_side
from crdsops.runtime import health, selftest
from crdsops.runtime.environ import child_environ, manage, manage_argv, server_dir, stack_python

log = logging.getLogger(__name__)

IMPORT_SCRIPT = ("import crds_server.wsgi as w; from django.urls import get_resolver; "
                 "assert callable(w.application) and get_resolver().url_patterns")
# migrate --plan's words (Operation.describe()) for what changes or removes what exists
DESTRUCTIVE = ("Remove field", "Delete model", "Alter field", "Rename field", "Rename model", "Rename table",
               "Raw SQL operation", "Remove index", "Remove constraint")
SMOKE_START_TIMEOUT = 60

# The smoke test, in one client process (one import of crds, not one per question): what a
# pipeline asks of a server. get_server_info; `crds sync` of the operational context's
# mappings with their sha1s checked; and best references for one dataset made from the
# context's own rules (selftest.FIND_DATASET), computed by the server.
SMOKE_SCRIPT = selftest.FIND_DATASET + r"""
import json, sys
import crds
from crds.client import api
from crds.sync import SyncScript
obs = sys.argv[1]
info = api.get_server_info()
context = info["operational_context"]
if info["observatory"] != obs:
    sys.exit(f"get_server_info: observatory {info['observatory']}, not {obs}")
errors = SyncScript(f"crds.sync --{obs} --contexts {context} --check-files --check-sha1sum")()
if errors:
    sys.exit(f"crds sync --contexts {context}: {errors} errors")
found = find_dataset(context, api.get_reference_names(context)[:200], set(info.get("bad_files_list", [])))
if found is None:
    sys.exit(f"no reference of {context} has plain match parameters to make a dataset header from")
header, reftype, reference = found
best = crds.getrecommendations(header, reftypes=[reftype], context=context, observatory=obs)
if best.get(reftype) != reference:
    sys.exit(f"best references for a dataset of {reference}: {best}")
print(json.dumps({"context": context, "reftype": reftype, "reference": reference}))
"""


class PreflightFailed(CrdsOpsError):
    """The release did not pass; nothing was switched."""


@dataclass(frozen=True)
class Migration:
    name: str  # app.0002_name
    operations: tuple[str, ...]

    @property
    def destructive(self) -> tuple[str, ...]:
        return tuple(op for op in self.operations if op.startswith(DESTRUCTIVE))


def static_checks(config: ServerConfig) -> list[Migration]:
    """``importable``, ``checked`` and ``planned_migrations`` side by side (three Django starts at
    once, each in the release being tried); the planned migrations."""
    jobs = {}
    for name, check in (("importing", importable), ("check --deploy", checked), ("migrate --plan", planned_migrations)):
        context = contextvars.copy_context()  # the release being tried (releases.trying), in each thread
        jobs[name] = functools.partial(context.run, check, config)
    try:
        results = side_by_side(jobs).results
    except JobsFailed as err:
        first = err.failures[0][1]
        raise (first if isinstance(first, PreflightFailed) else PreflightFailed(str(first))) from None
    planned = results["migrate --plan"]
    log.info(f"preflight: {len(planned)} migrations to apply" +
             (": " + ", ".join(m.name for m in planned) if planned else ""))
    return planned


def importable(config: ServerConfig) -> None:
    result = commands.run([str(stack_python(config)), "-c", IMPORT_SCRIPT], what="importing the WSGI application",
                          cwd=server_dir(config), env=child_environ(config), check=False, timeout=120)
    if not result.ok:
        raise PreflightFailed(f"its WSGI application does not import: {result.last_error_line()}")
    log.info("preflight: the WSGI application imports")


def checked(config: ServerConfig) -> list[str]:
    """``manage.py check --deploy``; return the warnings (shown), refuse on an error."""
    result = manage(config, "check", "--deploy", "--database", "default", capture=True, check=False)
    output = (result.stdout + result.stderr).strip()
    if not result.ok:
        errors = [line for line in output.splitlines() if re.search(r"\(\w+\.E\d+\)|Error", line)]
        raise PreflightFailed(f"manage.py check --deploy found errors: {(errors or output.splitlines() or ['?'])[-1]}")
    warnings = [line.strip() for line in output.splitlines() if re.search(r"\(\w+\.W\d+\)", line)]
    for line in warnings:
        log.info(f"preflight: check --deploy warns: {line}")
    log.info(f"preflight: manage.py check --deploy passed ({len(warnings)} warnings)")
    return warnings


def planned_migrations(config: ServerConfig) -> list[Migration]:
    """The migrations ``migrate`` would run on the live database, with their operations."""
    result = manage(config, "migrate", "--plan", capture=True, check=False)
    if not result.ok:
        raise PreflightFailed(f"manage.py migrate --plan failed: {result.last_error_line()}")
    migrations: list[Migration] = []
    for line in result.stdout.splitlines():
        if not line.strip() or line.startswith("Planned operations") or "No planned migration" in line:
            continue
        if line.startswith("    ") and migrations:
            last = migrations[-1]
            migrations[-1] = Migration(last.name, (*last.operations, line.strip()))
        elif not line.startswith(" "):
            migrations.append(Migration(line.strip(), ()))
    return migrations


def refuse_destructive(migrations: list[Migration], allow: bool) -> None:
    bad = [(m.name, op) for m in migrations for op in m.destructive]
    if not bad:
        return
    said = "; ".join(f"{name}: {op}" for name, op in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
    if allow:
        log.warning(f"preflight: destructive migrations allowed (--allow-destructive): {said}")
        return
    raise PreflightFailed(f"a migration changes what exists ({said}); rolling the code back could not undo it: "
                          "apply it in a planned window with --allow-destructive")


def smoke(config: ServerConfig) -> None:
    """Serve the release on a free loopback port, the live database read-only; the real client's checks."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(child_environ(config), CRDS_DB_READ_ONLY="1")
    argv = manage_argv(config, "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}")
    with _serving(argv, env, config, url), tempfile.TemporaryDirectory(prefix="crdsops-smoke-") as cache:
        client = selftest.Client(str(stack_python(config)), url, cache)
        result = client.run("-c", SMOKE_SCRIPT, config.observatory)
    if result.returncode != 0:
        raise PreflightFailed(f"its smoke test with the real crds client failed: {result.last_error_line()}")
    said = json.loads(result.stdout.strip().splitlines()[-1])
    log.info(f"preflight: smoke test on {url} with the real crds client: get_server_info, crds sync of "
             f"{said['context']} (sha1s checked), best {said['reftype']} {said['reference']}: ok")


@contextlib.contextmanager
def _serving(argv: list[str], env: dict, config: ServerConfig, url: str):
    """The release's server for the block; yields the last lines it printed (for the error line)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        process = commands.start(argv, what="the release's smoke server", cwd=server_dir(config), env=env,
                                 stdin=commands.DEVNULL, stdout=out, stderr=commands.STDOUT, start_new_session=True)
        lines: list[str] = []
        try:
            deadline = time.monotonic() + SMOKE_START_TIMEOUT
            while not health.answers(url, timeout=2):
                if process.poll() is not None or time.monotonic() > deadline:
                    out.seek(0)
                    said = [line for line in out.read().splitlines() if line.strip()]
                    raise PreflightFailed("its smoke server " + ("exited" if process.poll() is not None else
                                          f"did not answer within {SMOKE_START_TIMEOUT}s")
                                          + (f": {said[-1]}" if said else ""))
                time.sleep(0.1)
            yield lines
        finally:
            process.terminate()
            try:
                process.wait(10)
            except Exception:  # noqa: BLE001 - it must not outlive the preflight
                process.kill()
                process.wait()
            out.seek(0)
            lines[:] = [line for line in out.read().splitlines() if line.strip()][-3:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
