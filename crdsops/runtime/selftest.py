"""``inv runtests``: the server's Django test suite, then live checks through the real crds client.

The live checks play the part of a user: a fresh ``CRDS_PATH``, ``crds`` pointed at the
running server, a reference and a mapping synced, their sha1sums compared with the catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.runtime import health
from crdsops.runtime.environ import manage, stack_python

CLIENT_INFO_SCRIPT = (
    "import json, crds.client.api as api; "
    "info = api.get_server_info(); "
    "print(json.dumps({'observatory': info['observatory'], 'context': info['operational_context']}))"
)


class Checks:
    def __init__(self, say):
        self.say = say
        self.passed = 0
        self.failed = 0

    def record(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
            self.say(f"ok    {name}" + (f" ({detail})" if detail else ""))
        else:
            self.failed += 1
            self.say(f"FAIL  {name}: {detail}")

    @property
    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def run(config: ServerConfig, say=print, django_tests: bool = True, live: bool = True) -> Checks:
    checks = Checks(say)
    if django_tests:
        say("running the server's Django test suite ...")
        result = manage(config, "test", "crds_server", "--noinput", check=False, capture=True)
        output = result.stdout + result.stderr
        say(output.rstrip())
        ran = re.search(r"^Ran (\d+) tests?", output, re.MULTILINE)
        count = int(ran.group(1)) if ran else 0
        checks.record("django test suite", result.returncode == 0 and count > 0,
                      f"{count} tests, exit {result.returncode}")
    if live:
        _live_checks(config, checks)
    return checks


def _live_checks(config: ServerConfig, checks: Checks) -> None:
    url = config.local_url
    if not health.answers(url):
        checks.record("server answers", False, f"{config.name} does not answer at {url}; start it with `inv run`")
        return
    python = str(stack_python(config))
    with tempfile.TemporaryDirectory(prefix="crdsops-selftest-") as cache:
        env = dict(os.environ, CRDS_SERVER_URL=url, CRDS_PATH=cache, CRDS_MODE="remote")
        env.pop("CRDS_OBSERVATORY", None)
        info = subprocess.run([python, "-c", CLIENT_INFO_SCRIPT], env=env, capture_output=True, text=True)
        if info.returncode != 0:
            checks.record("crds client get_server_info", False, _last_line(info))
            return
        answer = json.loads(info.stdout.strip().splitlines()[-1])
        checks.record("crds client get_server_info", answer["observatory"] == config.observatory,
                      f"observatory {answer['observatory']}, context {answer['context']}")
        try:
            names = _sample_files(url)
        except CrdsOpsError as err:
            checks.record("catalog lists files", False, str(err))
            return
        # `--organize=flat` imports observatory plugins (jwst needs stdatamodels); the cache
        # mode file says the same thing to any client.
        mode = Path(cache) / "config" / config.observatory / "ref_cache_subdir_mode"
        mode.parent.mkdir(parents=True, exist_ok=True)
        mode.write_text("flat\n")
        sync = subprocess.run(
            [python, "-m", "crds.sync", f"--{config.observatory}", "--files", *names],
            env=env, capture_output=True, text=True,
        )
        checks.record("crds sync", sync.returncode == 0, f"{len(names)} files" if sync.returncode == 0 else _last_line(sync))
        for name in names:
            _check_file(url, Path(cache), name, checks)


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
    digest = hashlib.sha1(found.read_bytes()).hexdigest()
    checks.record(f"sha1sum {name}", digest == catalog.get("sha1sum"),
                  f"{digest}" if digest == catalog.get("sha1sum") else f"downloaded {digest}, catalog {catalog.get('sha1sum')}")


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"
