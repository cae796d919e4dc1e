"""A pipeline user's everyday workflows with the real crds client against the real server (hst and jwst).

Each test runs `crds ...` (or crds.getrecommendations) from the stack as a user would, with a
fresh CRDS_PATH, and asserts what the user sees: files present with the catalog's sha1sum,
"0 errors" in the client's summary, the chosen references.
"""
import hashlib
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from serverproc import PYTHON, SERVER_DIR, clean_environ, rpc

CRDS = str(Path(PYTHON).parent / "crds")
CLIENT_API = Path(PYTHON).parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "crds" / "client" / "api.py"

sys.path.insert(0, str(SERVER_DIR))
from crds_server.catalog.demo import demo_dataset, demo_set, layout  # noqa: E402

sys.path.remove(str(SERVER_DIR))


def client_url(server):
    # `localhost` spares every command the client's "does not start with https://" warning
    return server.url.replace("127.0.0.1", "localhost")


def client_env(server, cache, **extra):
    env = clean_environ()
    env.update(CRDS_SERVER_URL=client_url(server), CRDS_PATH=str(cache), CRDS_OBSERVATORY=server.obs, **extra)
    return env


def crds(server, cache, *args, **env):
    result = subprocess.run([CRDS, *args], env=client_env(server, cache, **env), capture_output=True, text=True,
                            timeout=180, stdin=subprocess.DEVNULL)
    result.output = result.stdout + result.stderr
    return result


def summary(result):
    """The client's closing counts: {'errors': n, 'warnings': n, 'infos': n}."""
    counts = dict((kind, int(n)) for n, kind in re.findall(r"CRDS - INFO -  (\d+) (errors|warnings|infos)", result.output))
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
    return {p.name: p for section in ("mappings", "references") for p in (cache / section).rglob("*")
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
    return (server.where / "runserver.log").read_text().count(f'"POST /json/{method}/')


# ---------------------------------------------------------------------------------- listing


def test_list_status_and_operational_context(demo_server, tmp_path):
    demo = demo_set(demo_server.obs)
    status = crds(demo_server, tmp_path / "c", "list", "--status")
    assert status.returncode == 0, status.output
    assert f"Effective Context = '{demo.context}'" in status.stdout
    assert f"CRDS_SERVER_URL = '{client_url(demo_server)}'" in status.stdout
    context = crds(demo_server, tmp_path / "c", "list", "--operational-context")
    assert context.returncode == 0 and context.stdout.split() == [demo.context], context.output


def test_date_contexts_resolve_against_the_history(demo_server, tmp_path):
    obs, demo = demo_server.obs, demo_set(demo_server.obs)
    old, operational = (context for _start, context in demo.history)
    for spec, expected in ((f"{obs}-2030-01-01T00:00:00", operational), (f"{obs}-2022-01-01T00:00:00", old),
                           (f"{obs}-edit", operational), (f"{obs}-{layout(obs).instrument}-2022-01-01", None)):
        result = crds(demo_server, tmp_path / "c", "list", "--resolve-contexts", "--contexts", spec)
        assert result.returncode == 0, result.output
        assert result.stdout.split() == [expected or f"{obs}_{layout(obs).instrument}_0000.imap"], spec
    before = crds(demo_server, tmp_path / "c", "list", "--resolve-contexts", "--contexts", f"{obs}-2010-01-01T00:00:00")
    assert before.returncode != 0 and "the history starts at 2020-01-01T00:00:00" in before.output


# ---------------------------------------------------------------------------------- sync


def test_sync_files_and_all(demo_server, tmp_path):
    lay, demo = layout(demo_server.obs), demo_set(demo_server.obs)
    cache = tmp_path / "c"
    one = crds(demo_server, cache, "sync", "--files", lay.refs["blacklisted"])
    assert_clean(one)
    assert_cached_as_cataloged(demo_server, cache, [lay.refs["blacklisted"]])
    everything = crds(demo_server, cache, "sync", "--all")
    assert_clean(everything)
    assert_cached_as_cataloged(demo_server, cache, demo.mappings)
    assert f"Syncing {len(demo.mappings)} files" in everything.stderr
    assert not {n for n in cached_files(cache) if n.endswith(".fits")} - {lay.refs["blacklisted"]}, \
        "--all without --fetch-references fetched references"


def sync_operational(server, cache, *flags):
    return crds(server, cache, "sync", "--contexts", f"{server.obs}-operational", "--fetch-references", *flags)


def test_sync_symbolic_context_with_references_and_sha1_checks(demo_server, tmp_path):
    obs, demo = demo_server.obs, demo_set(demo_server.obs)
    cache = tmp_path / "c"
    result = sync_operational(demo_server, cache, "--check-files", "--check-sha1sum")
    assert_clean(result)
    assert f"Symbolic context '{obs}-operational' resolves to '{demo.context}'" in result.stderr
    mappings, references = closure(demo_server, demo.context)
    assert set(demo.bad_files) <= set(references)  # so the checks below have bad files to act on
    assert_cached_as_cataloged(demo_server, cache, mappings + references)
    assert set(cached_files(cache)) == set(mappings + references)
    # The cache's config now says what the server says.
    server_config = (cache / "config" / obs / "server_config").read_text()
    assert repr(demo.context) in server_config and repr(demo.bad_files[0]) in server_config

    # Purging: the rejected and blacklisted references go, the rest stays and checks clean.
    purge = sync_operational(demo_server, cache, "--check-files", "--check-sha1sum", "--purge-rejected",
                             "--purge-blacklisted")
    assert_clean(purge)
    assert set(cached_files(cache)) == set(mappings + references) - set(demo.bad_files)


def test_sync_purge_rejected_never_fetches_them(demo_server, tmp_path):
    lay = layout(demo_server.obs)
    assert_clean(sync_operational(demo_server, tmp_path / "c", "--purge-rejected", "--check-files"))
    names = set(cached_files(tmp_path / "c"))
    assert lay.refs["rejected"] not in names and lay.refs["current"] in names


def test_sync_literal_context_and_last(demo_server, tmp_path):
    demo = demo_set(demo_server.obs)
    old, operational = (context for _start, context in demo.history)
    literal = crds(demo_server, tmp_path / "a", "sync", "--contexts", old)
    assert_clean(literal)
    assert_cached_as_cataloged(demo_server, tmp_path / "a", closure(demo_server, old)[0])
    last = crds(demo_server, tmp_path / "b", "sync", "--last", "1")
    assert_clean(last)
    assert set(cached_files(tmp_path / "b")) == set(closure(demo_server, operational)[0])
    both = crds(demo_server, tmp_path / "c", "sync", "--last", "2", "--fetch-references", "--check-files")
    assert_clean(both)
    assert set(cached_files(tmp_path / "c")) == set(demo.files)


def test_fetch_sqlite_db_and_query_it(demo_server, tmp_path):
    obs, demo = demo_server.obs, demo_set(demo_server.obs)
    fetched = crds(demo_server, tmp_path / "c", "sync", "--fetch-sqlite-db")
    assert_clean(fetched)
    assert (tmp_path / "c" / "config" / obs / "crds_db.sqlite3").is_file()
    query = crds(demo_server, tmp_path / "c", "sql",
                 f"select name from crds_{obs}_catalog where rejected = 1 or blacklisted = 1 order by name")
    assert query.returncode == 0, query.output
    assert query.stdout.split() == [f"('{name}',)" for name in demo.bad_files]
    tables = crds(demo_server, tmp_path / "c", "sql", "--list-tables")
    assert tables.stdout.split() == [f"crds_{obs}_catalog", f"crds_{obs}_context_history"]


# ---------------------------------------------------------------------------------- best references


def types_argument(obs):
    """jwst: the locator lists every type the pipeline uses; the demo context holds two."""
    lay = layout(obs)
    return ["--types", lay.dark, lay.flat] if obs == "jwst" else []


@pytest.mark.parametrize("mode", ["auto", "remote"])
def test_bestrefs_on_a_dataset_file(demo_server, tmp_path, mode):
    obs, dataset = demo_server.obs, demo_dataset(demo_server.obs)
    path = tmp_path / dataset.name
    path.write_bytes(dataset.content)
    if mode == "remote":  # the bestrefs tool reads the context's imap from the cache even then
        assert_clean(crds(demo_server, tmp_path / "c", "sync", "--contexts", f"{obs}-operational"))
    asked = server_calls(demo_server, "get_best_references")
    result = crds(demo_server, tmp_path / "c", "bestrefs", "--files", str(path), "--new-context",
                  f"{obs}-operational", "--print-new-references", *types_argument(obs), CRDS_MODE=mode)
    assert_clean(result)
    chosen = {line.split()[2]: line.split()[4] for line in result.stdout.splitlines()
              if line.startswith(str(path))}
    assert chosen == dataset.bestrefs, result.output
    # auto computes locally on the synced rules; remote asks the server, once per dataset
    assert server_calls(demo_server, "get_best_references") - asked == (1 if mode == "remote" else 0)


RECOMMEND = """
import json, sys, crds
header, obs, context = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None
print(json.dumps(crds.getrecommendations(header, context=context, observatory=obs)))
"""


def recommendations(server, cache, header, mode, context=""):
    result = subprocess.run([PYTHON, "-c", RECOMMEND, json.dumps(header), server.obs, context],
                            env=client_env(server, cache, CRDS_MODE=mode), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_getrecommendations_remote_is_local(demo_server, tmp_path):
    obs, dataset = demo_server.obs, demo_dataset(demo_server.obs)
    asked = server_calls(demo_server, "get_best_references")
    remote = recommendations(demo_server, tmp_path / "r", dataset.header, "remote")
    assert server_calls(demo_server, "get_best_references") == asked + 1
    local = recommendations(demo_server, tmp_path / "l", dataset.header, "local")
    assert server_calls(demo_server, "get_best_references") == asked + 1
    assert remote == local == dataset.bestrefs
    for context in (f"{obs}-operational", demo_set(obs).context):  # named contexts, the same answer
        assert recommendations(demo_server, tmp_path / "r", dataset.header, "remote", context) == dataset.bestrefs


def test_bad_reference_is_refused_the_same_in_both_modes(demo_server, tmp_path):
    """Under the old context the dataset selects the blacklisted dark: both modes refuse it."""
    obs, dataset = demo_server.obs, demo_dataset(demo_server.obs)
    for mode in ("remote", "local"):
        result = subprocess.run([PYTHON, "-c", RECOMMEND, json.dumps(dataset.header), obs, f"{obs}-2022-01-01"],
                                env=client_env(demo_server, tmp_path / mode, CRDS_MODE=mode),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert f"'{layout(obs).refs['blacklisted']}'" in result.stderr and "scientifically invalid" in result.stderr


# ---------------------------------------------------------------------------------- the whole API

API_CALLS = """
import json, sys
import crds.client.api as api
obs, context, reference, header = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print(json.dumps({
    "mapping_names": api.get_mapping_names(context),
    "reference_names": api.get_reference_names(context),
    "required_parkeys": api.get_required_parkeys(context),
    "by_date": api.get_context_by_date(obs + "-2022-06-01T00:00:00", observatory=obs),
    "edit": api.get_default_context(obs, "edit"),
    "latest": api.get_default_context(obs, "latest"),
    "history": api.get_context_history(obs),
    "bestrefs": api.get_best_references(context, header),
    "by_header_map": api.get_best_references_by_header_map(context, {"ds1": header}),
    "url": api.get_flex_uri(reference, obs),
    "info": api.get_file_info(context, reference),
}))
"""


def test_client_api_shapes(demo_server, tmp_path):
    obs, demo, dataset, lay = demo_server.obs, demo_set(demo_server.obs), demo_dataset(demo_server.obs), \
        layout(demo_server.obs)
    result = subprocess.run([PYTHON, "-c", API_CALLS, obs, demo.context, lay.refs["current"],
                             json.dumps(dataset.header)], env=client_env(demo_server, tmp_path / "c"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.splitlines()[-1])
    assert set(got["mapping_names"]) == {n for n in demo.mappings if "0000" not in n or lay.flat in n}
    assert set(got["reference_names"]) == set(demo.references)
    assert set(got["required_parkeys"]) == {lay.instrument}
    assert got["by_date"] == demo.history[0][1]
    assert got["edit"] == got["latest"] == demo.context
    assert [tuple(row[:2]) for row in got["history"]] == demo.history  # the client sorts it oldest first
    assert got["bestrefs"] == got["by_header_map"]["ds1"] == dataset.bestrefs
    assert got["url"] == f"{client_url(demo_server)}/unchecked_get/references/{obs}/{lay.refs['current']}"
    assert got["info"]["sha1sum"] == rpc(demo_server.url, "get_file_info", None, lay.refs["current"])["sha1sum"]


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


def test_no_client_method_answers_html(demo_server):
    table = plausible_params(demo_server.obs)
    methods = client_methods()
    assert len(methods) >= 25, methods  # the parse found the client's calls
    assert not set(methods) - set(table), f"give plausible params for {sorted(set(methods) - set(table))}"
    # plausible arguments, then arguments of the wrong shape: always a JSON-RPC answer
    for method in methods:
        for params in (table[method], [None] * len(table[method]), [{"x": []}], []):
            status, content_type, body = post(demo_server, method, params)
            assert (status, content_type) == (200, "application/json"), (method, params, body[:200])
            answer = json.loads(body)
            assert answer["error"] is None or answer["error"]["message"], (method, params, answer)
            if params is table[method] and answer["error"] is not None:
                assert answer["error"]["name"] == "ServiceNotAvailable", (method, answer["error"])
