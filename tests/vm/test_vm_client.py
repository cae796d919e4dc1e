"""The real crds client's everyday workflows against hst dev behind Apache/mod_wsgi, on MariaDB.

The same workflows as tests/server (tests/crdsclient.py), here served by Apache: mappings and
references delivered by Apache itself, JSON-RPC (best references computed by the crds library
in the mod_wsgi daemons, as the web user) by Django. `inv runtests` then runs its live checks
through Apache too.
"""

import urllib.request
from types import SimpleNamespace

import crdsclient as cc
import pytest
from vmkinds import requires_vm_services, running_dev

pytestmark = requires_vm_services


@pytest.fixture(scope="module")
def apache_hst(vm):
    with running_dev(vm) as cfg:
        yield SimpleNamespace(url=cfg.local_url, obs="hst", log=cfg.root / "logs" / "apache_access.log", ops=vm)


def test_served_by_apache(apache_hst):
    """Apache, not Django, delivers the mappings (ETag and byte ranges); its access log sees the JSON-RPC calls."""
    context = cc.demo_set("hst").context
    with urllib.request.urlopen(f"{apache_hst.url}/unchecked_get/mappings/hst/{context}") as response:
        assert response.headers.get("ETag") and response.headers.get("Accept-Ranges") == "bytes"
    before = cc.server_calls(apache_hst, "get_mapping_names")
    assert cc.post(apache_hst, "get_mapping_names", [context])[0] == 200  # as the client posts it
    assert cc.wait_for_log(apache_hst, "get_mapping_names", before + 1) == before + 1


@pytest.mark.parametrize("workflow", [
    cc.workflow_list, cc.workflow_date_contexts, cc.workflow_sync_files_and_all, cc.workflow_sync_symbolic_context,
    cc.workflow_sync_literal_and_last, cc.workflow_sqlite, cc.workflow_getrecommendations,
])
def test_client_workflow_through_apache(apache_hst, tmp_path, workflow):
    workflow(apache_hst, tmp_path)


@pytest.mark.parametrize("mode", ["auto", "remote"])
def test_bestrefs_through_apache(apache_hst, tmp_path, mode):
    cc.workflow_bestrefs_file(apache_hst, tmp_path, mode)


def test_no_client_method_answers_html_through_apache(apache_hst):
    cc.workflow_no_html(apache_hst)


def test_bad_bodies_answer_jsonrpc_errors_through_apache(apache_hst):
    """Apache passes bodies up to its limit (far above the server's) to Django, which answers them."""
    cc.workflow_bad_bodies(apache_hst)


def test_runtests_live_checks_through_apache(apache_hst):
    out = apache_hst.ops.inv("runtests", timeout=900).stdout
    for line in ("ok    crds sync --contexts hst-operational --check-sha1sum (0 errors, 4 mappings, 4 references",
                 "ok    best references local = remote (darkfile d0m00002j_drk.fits under hst_0001.pmap)",
                 "ok    date context hst-2020-01-01T00:00:00 (hst_0000.pmap)"):
        assert line in out, out
    assert out.strip().splitlines()[-1].endswith(" 0 failed")
