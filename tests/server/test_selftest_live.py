"""`inv runtests`'s live checks (crdsops.runtime.selftest.live_checks) against the real server, hst and jwst."""
from serverproc import PYTHON, RunningServer, manage

from crdsops.runtime import selftest


def run_checks(server):
    checks = selftest.Checks()
    selftest.live_checks(server.url, server.obs, PYTHON, checks)
    return checks, checks.lines


def test_live_checks_pass_and_cover_the_client_workflows(demo_server):
    checks, lines = run_checks(demo_server)
    assert checks.failed == 0, "\n".join(lines)
    obs = demo_server.obs
    text = "\n".join(lines)
    for expected in (f"ok    crds sync --contexts {obs}-operational --check-sha1sum (0 errors, ",
                     "4 references", f"ok    {obs}_0001.pmap files match the catalog",
                     "ok    best references local = remote", f"ok    date context {obs}-2024-01-01T00:00:00 ({obs}_0001.pmap)",
                     f"ok    date context {obs}-2020-01-01T00:00:00 ({obs}_0000.pmap)"):
        assert expected in text, text


def test_live_checks_fail_when_the_catalog_disagrees_with_the_files(tmp_path):
    """A sha1sum in the catalog that the delivered file does not have: the context sync check fails."""
    server = RunningServer(tmp_path / "server", "hst")
    server.where.mkdir()
    try:
        server.start()
        manage(server.env, "shell", "-c",
               "from crds_server.catalog.models import CatalogFile; "
               "CatalogFile.objects.filter(name='d0m00002j_drk.fits').update(sha1sum='0' * 40)")
        checks, lines = run_checks(server)
    finally:
        server.stop()
    text = "\n".join(lines)
    assert "FAIL  crds sync --contexts hst-operational --check-sha1sum" in text, text
    assert checks.failed >= 1
