"""``inv runtests``: the server's Django test suite, then live checks through the real crds client.

The live checks play the part of a pipeline user: a fresh ``CRDS_PATH``, ``crds`` pointed at
the running server, then

- a reference and a mapping synced (``--files``), their sha1sums compared with the catalog;
- ``crds sync --contexts <obs>-operational --fetch-references --check-files --check-sha1sum``
  with 0 errors and every file of the context present with the catalog's sha1sum (the
  references only while they total at most LIVE_SYNC_MAX_BYTES: an ops context names
  terabytes; above that the mappings are synced and checked and the check says so);
- the same best references from ``crds.getrecommendations`` in local and in remote mode, for
  a dataset header made from the match parameters of one of the context's references;
- the history's newest (and the one before) context resolved from its start date by
  ``crds list --resolve-contexts``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.runtime import health, results
from crdsops.runtime.environ import manage, stack_python

log = logging.getLogger(__name__)

LIVE_SYNC_MAX_BYTES = 500 * 10**6

CLIENT_INFO_SCRIPT = (
    "import json, crds.client.api as api; "
    "info = api.get_server_info(); "
    "print(json.dumps({'observatory': info['observatory'], 'context': info['operational_context']}))"
)

# find_dataset(context, references, bad): (header, reftype, reference) of a dataset that `context`
# answers with `reference`, from crds.matches on the synced rules: the first reference whose match
# values are plain ones (no wildcard, expression or alternatives) that is not a bad file; else None.
FIND_DATASET = r"""
def find_dataset(context, references, bad):
    import crds
    from crds import matches
    instrument_key = crds.get_cached_mapping(context).parkey[0]
    for reference in references:
        if reference in bad:
            continue
        try:
            found = matches.find_match_paths_as_dict(context, reference)
        except Exception:
            continue
        for match in found:
            values = {k: str(v) for k, v in match.items() if k not in ("observatory", "instrument", "filekind")}
            if all(v and not v.startswith(("*", "#", "(")) and "|" not in v for v in values.values()):
                return dict(values, **{instrument_key: match["instrument"].upper()}), match["filekind"], reference
    return None
"""

# Prints {"header", "reftype", "reference"} (find_dataset's), or exits saying there is none.
DATASET_SCRIPT = FIND_DATASET + r"""
import json, sys
context, references, bad = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
found = find_dataset(context, references, bad)
if found is None:
    sys.exit("no reference of " + context + " has plain match parameters to make a dataset header from")
print(json.dumps({"header": found[0], "reftype": found[1], "reference": found[2]}))
"""

RECOMMEND_SCRIPT = r"""
import json, sys, crds
header, reftype, context, obs = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
print(json.dumps(crds.getrecommendations(header, reftypes=[reftype], context=context, observatory=obs)))
"""


class Checks:
    """The checks of one self-test run: counted, each said as one line and kept (``lines``)."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lines: list[str] = []

    def record(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
            line = f"ok    {name}" + (f" ({detail})" if detail else "")
        else:
            self.failed += 1
            line = f"FAIL  {name}: {detail}"
        self.lines.append(line)
        log.info(line)

    @property
    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def run(config: ServerConfig, django_tests: bool = True, live: bool = True) -> Checks:
    checks = Checks()
    if django_tests:
        log.info("running the server's Django test suite ...")
        result = manage(config, "test", "crds_server", "--noinput", check=False, capture=True)
        output = result.stdout + result.stderr
        log.info(output.rstrip())
        ran = re.search(r"^Ran (\d+) tests?", output, re.MULTILINE)
        count = int(ran.group(1)) if ran else 0
        checks.record("django test suite", result.returncode == 0 and count > 0,
                      f"{count} tests, exit {result.returncode}")
    if live:
        _live_checks(config, checks)
    return checks


def run_recorded(config: ServerConfig, django_only: bool = False, live_only: bool = False) -> Checks:
    """``run``, its result kept for `inv status` (``results``), also when the tests could not run."""
    started = time.monotonic()
    scope = {"django_only": bool(django_only), "live_only": bool(live_only)}
    try:
        checks = run(config, django_tests=not live_only, live=not django_only)
    except CrdsOpsError as err:
        results.write(config.layout, results.RuntestsResult(
            ok=False, seconds=round(time.monotonic() - started, 3), error=str(err).splitlines()[0], **scope))
        raise
    results.write(config.layout, results.RuntestsResult(
        ok=not checks.failed, seconds=round(time.monotonic() - started, 3), passed=checks.passed,
        failed=checks.failed, summary=checks.summary, **scope))
    return checks


def _live_checks(config: ServerConfig, checks: Checks) -> None:
    live_checks(config.local_url, config.observatory, str(stack_python(config)), checks)


def live_checks(url: str, observatory: str, python: str, checks: Checks) -> None:
    """The client workflows against the server at ``url``, with the crds client of ``python``."""
    if not health.answers(url):
        checks.record("server answers", False, f"the {observatory} server does not answer at {url}; start it with `inv run`")
        return
    with tempfile.TemporaryDirectory(prefix="crdsops-selftest-") as cache:
        client = Client(python, url, cache)
        info = client.run("-c", CLIENT_INFO_SCRIPT)
        if info.returncode != 0:
            checks.record("crds client get_server_info", False, _last_line(info))
            return
        answer = json.loads(info.stdout.strip().splitlines()[-1])
        checks.record("crds client get_server_info", answer["observatory"] == observatory,
                      f"observatory {answer['observatory']}, context {answer['context']}")
        try:
            names = _sample_files(url)
        except CrdsOpsError as err:
            checks.record("catalog lists files", False, str(err))
            return
        # `--organize=flat` imports observatory plugins; the cache mode file says the same thing to any client.
        mode = Path(cache) / "config" / observatory / "ref_cache_subdir_mode"
        mode.parent.mkdir(parents=True, exist_ok=True)
        mode.write_text("flat\n")
        sync = client.run("-m", "crds.sync", f"--{observatory}", "--files", *names)
        checks.record("crds sync", sync.returncode == 0, f"{len(names)} files" if sync.returncode == 0 else _last_line(sync))
        for name in names:
            _check_file(url, Path(cache), name, checks)
        context = answer["context"]
        try:
            if _check_context_sync(url, observatory, client, context, checks):
                _check_bestrefs(url, observatory, client, context, checks)
            _check_date_contexts(url, observatory, client, checks)
        except CrdsOpsError as err:  # a server that does not answer what the client asks
            checks.record("client workflows", False, str(err))


class Client:
    """The real crds client of the server's stack, on one scratch cache."""

    def __init__(self, python: str, url: str, cache: str):
        self.python = python
        self.env = dict(os.environ, CRDS_SERVER_URL=url, CRDS_PATH=cache, CRDS_MODE="remote")
        self.env.pop("CRDS_OBSERVATORY", None)
        self.env.pop("CRDS_CONTEXT", None)

    def run(self, *args: str, mode: str | None = None, timeout: float = 3600) -> commands.Result:
        env = dict(self.env, CRDS_MODE=mode) if mode else self.env
        return commands.run([self.python, *args], what="the crds client", env=env, check=False, timeout=timeout)


def client_errors(result: commands.Result) -> int | None:
    """The error count of the client's closing summary ("CRDS - INFO -  N errors"), None without one."""
    found = re.findall(r"CRDS - INFO -\s+(\d+) errors", result.stdout + result.stderr)
    return int(found[-1]) if found else None


def _check_context_sync(url: str, observatory: str, client: Client, context: str, checks: Checks) -> bool:
    """Sync `<obs>-operational` (with its references when they are small enough) and check every file."""
    mappings = health.rpc(url, "get_mapping_names", context)
    references = health.rpc(url, "get_reference_names", context)
    catalog = health.rpc(url, "get_file_info_map", observatory, mappings + references, ["size", "sha1sum"], timeout=60)
    known = [r for r in references if isinstance(catalog.get(r), dict)]
    total = sum(int(catalog[r]["size"]) for r in known)
    fetch = total <= LIVE_SYNC_MAX_BYTES
    args = ["-m", "crds.sync", f"--{observatory}", "--contexts", f"{observatory}-operational", "--check-files", "--check-sha1sum"]
    sync = client.run(*args, *(["--fetch-references"] if fetch else []))
    errors = client_errors(sync)
    what = f"{len(mappings)} mappings" + (f", {len(known)} references ({total} bytes)" if fetch else
                                          f"; references skipped: {total} bytes > {LIVE_SYNC_MAX_BYTES}")
    ok = sync.returncode == 0 and errors == 0
    checks.record(f"crds sync --contexts {observatory}-operational --check-sha1sum", ok,
                  f"0 errors, {what}" if ok else f"{errors} errors: {_last_line(sync)}")
    expected = mappings + (known if fetch else [])
    cached = {p.name: p for p in Path(client.env["CRDS_PATH"]).rglob("*") if p.is_file()}
    wrong = [n for n in expected if n not in cached or _sha1(cached[n]) != catalog[n]["sha1sum"]]
    checks.record(f"{context} files match the catalog", not wrong,
                  f"{len(expected)} files" if not wrong else f"missing or different: {' '.join(wrong[:5])}")
    return ok


def _check_bestrefs(url: str, observatory: str, client: Client, context: str, checks: Checks) -> None:
    """The same best references in local and remote mode, for a header the context answers."""
    references = health.rpc(url, "get_reference_names", context)
    bad = health.rpc(url, "get_server_info").get("bad_files_list", [])
    made = client.run("-c", DATASET_SCRIPT, context, json.dumps(references[:200]), json.dumps(bad), mode="local")
    if made.returncode != 0:
        checks.record("best references local = remote", False, _last_line(made))
        return
    dataset = json.loads(made.stdout.strip().splitlines()[-1])
    answers = {}
    for mode in ("local", "remote"):
        result = client.run("-c", RECOMMEND_SCRIPT, json.dumps(dataset["header"]), dataset["reftype"], context,
                            observatory, mode=mode)
        answers[mode] = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else _last_line(result)
    chosen = answers["remote"].get(dataset["reftype"]) if isinstance(answers["remote"], dict) else None
    ok = answers["local"] == answers["remote"] and chosen == dataset["reference"]
    checks.record("best references local = remote", ok,
                  f"{dataset['reftype']} {chosen} under {context}" if ok else
                  f"local {answers['local']}, remote {answers['remote']}, expected {dataset['reference']}")


def _check_date_contexts(url: str, observatory: str, client: Client, checks: Checks) -> None:
    """`crds list --resolve-contexts` of the newest history entries' start dates gives their contexts."""
    history = health.rpc(url, "get_context_history", observatory)[:2]  # newest first
    for start, context, *_ in history:
        spec = f"{observatory}-{start.replace(' ', 'T')}"
        listed = client.run("-m", "crds.list", f"--{observatory}", "--resolve-contexts", "--contexts", spec)
        got = listed.stdout.split() if listed.returncode == 0 else [_last_line(listed)]
        checks.record(f"date context {spec}", got == [context], f"{context}" if got == [context] else f"got {got}")
    if not history:
        checks.record("date context", False, "the server's context history is empty")


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sample_files(url: str) -> list[str]:
    references = health.rpc(url, "list_references", None, "*") or []
    mappings = health.rpc(url, "list_mappings", None, "*") or []
    if not references or not mappings:
        raise CrdsOpsError(f"the catalog at {url} lists {len(references)} references and {len(mappings)} mappings; ingest some files")
    return [sorted(references)[0], sorted(mappings)[0]]


def _check_file(url: str, cache: Path, name: str, checks: Checks) -> None:
    found = next(iter(cache.rglob(name)), None)
    if found is None:
        checks.record(f"download {name}", False, "not in the client's cache after sync")
        return
    catalog = health.rpc(url, "get_file_info", None, name)
    digest = _sha1(found)
    checks.record(f"sha1sum {name}", digest == catalog.get("sha1sum"),
                  f"{digest}" if digest == catalog.get("sha1sum") else f"downloaded {digest}, catalog {catalog.get('sha1sum')}")


def _last_line(result: commands.Result) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"
