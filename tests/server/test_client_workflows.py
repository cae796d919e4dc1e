"""A pipeline user's everyday workflows with the real crds client against runserver, hst and jwst.

The workflows themselves are in tests/crdsclient.py (tests/vm runs them under Apache too);
each runs `crds ...` or crds.getrecommendations from the stack with a fresh CRDS_PATH and
asserts what the user sees: files present with the catalog's sha1sum, "0 errors" in the
client's summary, the chosen references.
"""
import json
import subprocess

import crdsclient as cc
import pytest
from serverproc import PYTHON, rpc


def test_list_status_and_operational_context(demo_server, tmp_path):
    cc.workflow_list(demo_server, tmp_path)


def test_date_contexts_resolve_against_the_history(demo_server, tmp_path):
    cc.workflow_date_contexts(demo_server, tmp_path)


def test_sync_files_and_all(demo_server, tmp_path):
    cc.workflow_sync_files_and_all(demo_server, tmp_path)


def test_sync_symbolic_context_with_references_sha1_checks_and_purges(demo_server, tmp_path):
    cc.workflow_sync_symbolic_context(demo_server, tmp_path)


def test_sync_literal_context_and_last(demo_server, tmp_path):
    cc.workflow_sync_literal_and_last(demo_server, tmp_path)


def test_fetch_sqlite_db_and_query_it(demo_server, tmp_path):
    cc.workflow_sqlite(demo_server, tmp_path)


@pytest.mark.parametrize("mode", ["auto", "remote"])
def test_bestrefs_on_a_dataset_file(demo_server, tmp_path, mode):
    cc.workflow_bestrefs_file(demo_server, tmp_path, mode)


def test_getrecommendations_remote_is_local(demo_server, tmp_path):
    cc.workflow_getrecommendations(demo_server, tmp_path)


def test_no_client_method_answers_html(demo_server):
    cc.workflow_no_html(demo_server)


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
    obs = demo_server.obs
    demo, dataset, lay = cc.demo_set(obs), cc.demo_dataset(obs), cc.layout(obs)
    result = subprocess.run([PYTHON, "-c", API_CALLS, obs, demo.context, lay.refs["current"],
                             json.dumps(dataset.header)], env=cc.client_env(demo_server, tmp_path / "c"),
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
    assert got["url"] == f"{cc.client_url(demo_server)}/unchecked_get/references/{obs}/{lay.refs['current']}"
    assert got["info"]["sha1sum"] == rpc(demo_server.url, "get_file_info", None, lay.refs["current"])["sha1sum"]
