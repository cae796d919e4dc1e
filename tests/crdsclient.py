"""The real crds client (the stack's `crds`, crds.getrecommendations) run against a server as a user would.

Shared by tests/server (runserver) and tests/vm (Apache/mod_wsgi): a `server` is anything with
`url` (where this machine reaches it), `obs`, and `log` (a request log naming
`"POST /json/<method>/`: runserver's output, Apache's access log).

The `workflow_*` functions are the pipeline user's everyday workflows, each asserting what the
user sees: files present with the catalog's sha1sum, "0 errors" in the client's summary, the
chosen references. With CRDSOPS_TEST_TRANSCRIPT=FILE every client command and the lines it
printed are appended to FILE.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from serverproc import PYTHON, SERVER_DIR, clean_environ, rpc

CRDS = str(Path(PYTHON).parent / "crds")
CLIENT_API = Path(PYTHON).parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "crds" / "client" / "api.py"

sys.path.insert(0, str(SERVER_DIR))
from crds_server.catalog.demo import demo_dataset, demo_set, layout  # noqa: E402

sys.path.remove(str(SERVER_DIR))

__all__ = ["demo_dataset", "demo_set", "layout"]


# ---------------------------------------------------------------------------------- running the client


def client_url(server):
    # `localhost` spares every command the client's "does not start with https://" warning
    return server.url.replace("127.0.0.1", "localhost")


def client_env(server, cache, **extra):
    env = clean_environ()
    env.update(CRDS_SERVER_URL=client_url(server), CRDS_PATH=str(cache), CRDS_OBSERVATORY=server.obs, **extra)
    return env


def _transcribe(argv, env, result):
    where = os.environ.get("CRDSOPS_TEST_TRANSCRIPT")
    if where:
        mode = f"CRDS_MODE={env['CRDS_MODE']} " if "CRDS_MODE" in env else ""
        with open(where, "a") as out:
            out.write(f"$ {mode}{' '.join(argv)}    # {env['CRDS_SERVER_URL']} (exit {result.returncode})\n")
            out.write("".join(f"    {line}\n" for line in (result.stdout + result.stderr).splitlines()))


def run_client(argv, env, timeout=180):
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    result.output = result.stdout + result.stderr
    _transcribe([Path(argv[0]).name, *argv[1:]], env, result)
    return result


def crds(server, cache, *args, **env):
    return run_client([CRDS, *args], client_env(server, cache, **env))


def summary(result):
    """The client's closing counts: {'errors': n, 'warnings': n, 'infos': n}."""
    counts = {kind: int(n) for n, kind in re.findall(r"CRDS - INFO -  (\d+) (errors|warnings|infos)", result.output)}
    assert set(counts) == {"errors", "warnings", "infos"}, result.output
    return counts


def assert_clean(result, warnings=0):
    assert result.returncode == 0, result.output
    counts = summary(result)
    assert counts["errors"] == 0 and counts["warnings"] == warnings, result.output


def sha1(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def cached_files(cache):
    """{name: path} of the mappings and references in a client cache (any subdirectory layout)."""
    return {p.name: p for section in ("mappings", "references") for p in (Path(cache) / section).rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def assert_cached_as_cataloged(server, cache, names):
    files = cached_files(cache)
    assert set(names) <= set(files), f"missing from the client cache: {sorted(set(names) - set(files))}"
    catalog = rpc(server.url, "get_file_info_map", server.obs, sorted(names), ["sha1sum", "size"])
    for name in names:
        assert sha1(files[name]) == catalog[name]["sha1sum"], name
        assert files[name].stat().st_size == int(catalog[name]["size"]), name


def closure(server, context):
    return rpc(server.url, "get_mapping_names", context), rpc(server.url, "get_reference_names", context)


def server_calls(server, method):
    """How many times the server was asked for `method` (the client posts to /json/<method>/<id>/)."""
    return Path(server.log).read_text().count(f'"POST /json/{method}/')


RECOMMEND = """
import json, sys, crds
header, obs, context = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None
print(json.dumps(crds.getrecommendations(header, context=context, observatory=obs)))
"""


def recommend(server, cache, header, mode, context=""):
    """crds.getrecommendations(header) in CRDS_MODE `mode`: the finished process."""
    return run_client([PYTHON, "-c", RECOMMEND, json.dumps(header), server.obs, context],
                      client_env(server, cache, CRDS_MODE=mode), timeout=120)


def recommendations(server, cache, header, mode, context=""):
    result = recommend(server, cache, header, mode, context)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def wait_for_log(server, method, count, timeout=5.0):
    """The request log's count of `method` once it reaches `count` (Apache writes its log a moment later)."""
    import time

    deadline = time.monotonic() + timeout
    while server_calls(server, method) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return server_calls(server, method)


# ---------------------------------------------------------------------------------- the workflows


def workflow_list(server, where):
    demo = demo_set(server.obs)
    status = crds(server, where / "c", "list", "--status")
    assert status.returncode == 0, status.output
    assert f"Effective Context = '{demo.context}'" in status.stdout
    assert f"CRDS_SERVER_URL = '{client_url(server)}'" in status.stdout
    context = crds(server, where / "c", "list", "--operational-context")
    assert context.returncode == 0 and context.stdout.split() == [demo.context], context.output


def workflow_date_contexts(server, where):
    obs, demo, lay = server.obs, demo_set(server.obs), layout(server.obs)
    old, operational = (context for _start, context in demo.history)
    for spec, expected in ((f"{obs}-2030-01-01T00:00:00", operational), (f"{obs}-2022-01-01T00:00:00", old),
                           (f"{obs}-edit", operational), (f"{obs}-{lay.instrument}-2022-01-01",
                                                          f"{obs}_{lay.instrument}_0000.imap")):
        result = crds(server, where / "c", "list", "--resolve-contexts", "--contexts", spec)
        assert result.returncode == 0, result.output
        assert result.stdout.split() == [expected], spec
    before = crds(server, where / "c", "list", "--resolve-contexts", "--contexts", f"{obs}-2010-01-01T00:00:00")
    assert before.returncode != 0 and "the history starts at 2020-01-01T00:00:00" in before.output


def workflow_sync_files_and_all(server, where):
    lay, demo, cache = layout(server.obs), demo_set(server.obs), where / "c"
    one = crds(server, cache, "sync", "--files", lay.refs["blacklisted"])
    assert_clean(one)
    assert_cached_as_cataloged(server, cache, [lay.refs["blacklisted"]])
    everything = crds(server, cache, "sync", "--all")
    assert_clean(everything)
    assert_cached_as_cataloged(server, cache, demo.mappings)
    assert f"Syncing {len(demo.mappings)} files" in everything.stderr
    assert not {n for n in cached_files(cache) if not n.endswith("map")} - {lay.refs["blacklisted"]}, \
        "--all without --fetch-references fetched references"


def sync_operational(server, cache, *flags):
    return crds(server, cache, "sync", "--contexts", f"{server.obs}-operational", "--fetch-references", *flags)


def workflow_sync_symbolic_context(server, where):
    """--contexts <obs>-operational --fetch-references --check-files --check-sha1sum, then --purge-*."""
    obs, demo, cache = server.obs, demo_set(server.obs), where / "c"
    result = sync_operational(server, cache, "--check-files", "--check-sha1sum")
    assert_clean(result)
    assert f"Symbolic context '{obs}-operational' resolves to '{demo.context}'" in result.stderr
    mappings, references = closure(server, demo.context)
    assert set(demo.bad_files) <= set(references)  # so the checks below have bad files to act on
    assert_cached_as_cataloged(server, cache, mappings + references)
    assert set(cached_files(cache)) == set(mappings + references)
    # The cache's config now says what the server says.
    server_config = (cache / "config" / obs / "server_config").read_text()
    assert repr(demo.context) in server_config and repr(demo.bad_files[0]) in server_config
    # Purging: the rejected and blacklisted references go, the rest stays and checks clean.
    purge = sync_operational(server, cache, "--check-files", "--check-sha1sum", "--purge-rejected",
                             "--purge-blacklisted")
    assert_clean(purge)
    assert set(cached_files(cache)) == set(mappings + references) - set(demo.bad_files)
    # ... and a fresh cache synced with --purge-rejected never fetches the rejected one.
    lay = layout(obs)
    assert_clean(sync_operational(server, where / "d", "--purge-rejected", "--check-files"))
    names = set(cached_files(where / "d"))
    assert lay.refs["rejected"] not in names and lay.refs["current"] in names


def workflow_sync_literal_and_last(server, where):
    demo = demo_set(server.obs)
    old, operational = (context for _start, context in demo.history)
    literal = crds(server, where / "a", "sync", "--contexts", old)
    assert_clean(literal)
    assert_cached_as_cataloged(server, where / "a", closure(server, old)[0])
    last = crds(server, where / "b", "sync", "--last", "1")
    assert_clean(last)
    assert set(cached_files(where / "b")) == set(closure(server, operational)[0])
    both = crds(server, where / "c", "sync", "--last", "2", "--fetch-references", "--check-files")
    assert_clean(both)
    assert set(cached_files(where / "c")) == set(demo.files)


def workflow_sqlite(server, where):
    obs, demo = server.obs, demo_set(server.obs)
    fetched = crds(server, where / "c", "sync", "--fetch-sqlite-db")
    assert_clean(fetched)
    assert (where / "c" / "config" / obs / "crds_db.sqlite3").is_file()
    query = crds(server, where / "c", "sql",
                 f"select name from crds_{obs}_catalog where rejected = 1 or blacklisted = 1 order by name")
    assert query.returncode == 0, query.output
    assert query.stdout.split() == [f"('{name}',)" for name in demo.bad_files]
    tables = crds(server, where / "c", "sql", "--list-tables")
    assert tables.stdout.split() == [f"crds_{obs}_catalog", f"crds_{obs}_context_history"]


def types_argument(obs):
    """jwst: the locator lists every type the pipeline uses; the demo context holds two."""
    lay = layout(obs)
    return ["--types", lay.dark, lay.flat] if obs == "jwst" else []


def workflow_bestrefs_file(server, where, mode):
    """crds bestrefs --files DATASET --new-context <obs>-operational, in CRDS_MODE auto or remote."""
    obs, dataset = server.obs, demo_dataset(server.obs)
    path = where / dataset.name
    path.write_bytes(dataset.content)
    if mode == "remote":  # the bestrefs tool reads the context's imap from the cache even then
        assert_clean(crds(server, where / "c", "sync", "--contexts", f"{obs}-operational"))
    asked = server_calls(server, "get_best_references")
    result = crds(server, where / "c", "bestrefs", "--files", str(path), "--new-context",
                  f"{obs}-operational", "--print-new-references", *types_argument(obs), CRDS_MODE=mode)
    assert_clean(result)
    # the client prints the dataset path lower-cased
    chosen = {line.split()[2]: line.split()[4] for line in result.stdout.splitlines()
              if line.lower().startswith(str(path).lower())}
    assert chosen == dataset.bestrefs, result.output
    # auto computes locally on the synced rules; remote asks the server, once per dataset
    expected = asked + (1 if mode == "remote" else 0)
    assert wait_for_log(server, "get_best_references", expected) == expected


def workflow_getrecommendations(server, where):
    """crds.getrecommendations(header): CRDS_MODE=remote (the server computes) = local (the client does)."""
    obs, dataset = server.obs, demo_dataset(server.obs)
    asked = server_calls(server, "get_best_references")
    remote = recommendations(server, where / "r", dataset.header, "remote")
    assert wait_for_log(server, "get_best_references", asked + 1) == asked + 1
    local = recommendations(server, where / "l", dataset.header, "local")
    assert wait_for_log(server, "get_best_references", asked + 1) == asked + 1
    assert remote == local == dataset.bestrefs
    for context in (f"{obs}-operational", demo_set(obs).context):  # named contexts, the same answer
        assert recommendations(server, where / "r", dataset.header, "remote", context) == dataset.bestrefs
    # Under the old context the dataset selects the blacklisted dark: both modes refuse it.
    for mode in ("remote", "local"):
        refused = recommend(server, where / mode, dataset.header, mode, f"{obs}-2022-01-01")
        assert refused.returncode != 0
        assert f"'{layout(obs).refs['blacklisted']}'" in refused.stderr and "scientifically invalid" in refused.stderr


# ---------------------------------------------------------------------------------- every method of api.py


def client_methods():
    """Every JSON-RPC method the installed client's api.py calls (S.<method>(...))."""
    return sorted(set(re.findall(r"\bS\.(\w+)\(", CLIENT_API.read_text())))


def plausible_params(obs):
    demo, dataset, lay = demo_set(obs), demo_dataset(obs), layout(obs)
    ctx, ref = demo.context, lay.refs["current"]
    return {
        "get_affected_datasets": [obs, demo.history[0][1], ctx],
        "get_aui_best_references": ["2030-01-01T00:00:00", ["J8BT05NJQ"]],
        "get_best_references": [ctx, dataset.header, None],
        "get_best_references_by_header_map": [ctx, {"ds1": dataset.header}, None],
        "get_best_references_by_ids": [ctx, ["J8BT05NJQ"], None, False],
        "get_build_context": [obs, "1.14.0"],
        "get_context_by_date": [f"{obs}-2030-01-01T00:00:00", obs],
        "get_context_history": [obs],
        "get_dataset_headers_by_id": [ctx, ["J8BT05NJQ"], None],
        "get_dataset_ids": [ctx, lay.instrument, None],
        "get_default_context": [obs, "latest"],
        "get_file_info": [ctx, ref],
        "get_file_info_map": [obs, [ref], ["size", "sha1sum"]],
        "get_mapping_names": [ctx],
        "get_mapping_url": [ctx, ctx],
        "get_reference_names": [ctx],
        "get_reference_url": [ctx, ref],
        "get_remote_context": [obs, "pipeline-1"],
        "get_required_parkeys": [ctx],
        "get_server_info": [],
        "get_sqlite_db": [obs],
        "get_system_versions": ["1.14.0", "None"],
        "get_url": [ctx, ref],
        "jpoll_abort": ["key"],
        "jpoll_pull_messages": ["key", None],
        "list_mappings": [obs, "*"],
        "list_references": [obs, "*"],
        "push_remote_context": [obs, "latest", "key", ctx],
    }


def post(server, method, params):
    body = json.dumps({"jsonrpc": "1.0", "method": method, "params": params, "id": 1}).encode()
    request = urllib.request.Request(f"{server.url}/json/{method}/00000001/", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, answer.headers.get("Content-Type"), answer.read()


def workflow_no_html(server):
    """Every method api.py can call, with plausible and with ill-shaped params: always a JSON-RPC answer."""
    table = plausible_params(server.obs)
    methods = client_methods()
    assert len(methods) >= 25, methods  # the parse found the client's calls
    assert not set(methods) - set(table), f"give plausible params for {sorted(set(methods) - set(table))}"
    for method in methods:
        for params in (table[method], [None] * len(table[method]), [{"x": []}], []):
            status, content_type, body = post(server, method, params)
            assert (status, content_type) == (200, "application/json"), (method, params, body[:200])
            answer = json.loads(body)
            assert answer["error"] is None or answer["error"]["message"], (method, params, answer)
            if params is table[method] and answer["error"] is not None:
                assert answer["error"]["name"] == "ServiceNotAvailable", (method, answer["error"])


def post_body(server, body: bytes):
    """POST raw ``body`` to /json/; (status, Content-Type, the decoded JSON). An HTTP error status raises."""
    request = urllib.request.Request(f"{server.url}/json/", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.status, answer.headers.get("Content-Type"), json.loads(answer.read())


def workflow_bad_bodies(server):
    """A body nested 5,000 deep, one of 12 MB (past mod_wsgi-express's default limit, within the
    server's) and one of 20 MB (past the server's 16 MiB): a JSON-RPC error each, then the server
    still answers get_server_info."""

    def error(body, name, words):
        status, content_type, answer = post_body(server, body)
        assert (status, content_type) == (200, "application/json"), (status, content_type, answer)
        assert answer["result"] is None and answer["error"]["name"] == name, answer
        assert words in answer["error"]["message"], answer

    error(b"[" * 5000, "ParseError", "more than 100 levels deep")
    padded = json.dumps({"method": "no_such_method", "params": ["x" * 12_000_000], "id": 1}).encode()
    error(padded, "MethodNotFound", "unknown method 'no_such_method'")
    huge = json.dumps({"method": "get_file_info_map", "params": [server.obs, ["x" * 100] * 200_000], "id": 1}).encode()
    assert len(huge) > 20 * 10**6
    error(huge, "RequestTooLarge", f"request body of {len(huge)} bytes is over this server's limit of 16777216 bytes")
    status, _, info = post_body(server, json.dumps({"method": "get_server_info", "params": [], "id": 2}).encode())
    assert status == 200 and info["error"] is None, info
    assert info["result"]["observatory"] == server.obs and info["result"]["operational_context"], info


def sync_files_flat(url, cache, names, *flags):
    """`crds.sync --hst --files NAMES FLAGS` from ``url`` into a new flat ``cache`` (as a pipeline host keeps it)."""
    env = dict(os.environ, CRDS_SERVER_URL=url, CRDS_PATH=str(cache), CRDS_MODE="remote")
    for var in ("DJANGO_SETTINGS_MODULE", "CRDS_OBSERVATORY"):
        env.pop(var, None)
    mode = Path(cache) / "config" / "hst" / "ref_cache_subdir_mode"
    mode.parent.mkdir(parents=True)
    mode.write_text("flat\n")
    return subprocess.run([sys.executable, "-m", "crds.sync", "--hst", "--files", *names, *flags],
                          env=env, capture_output=True, text=True, timeout=180)
