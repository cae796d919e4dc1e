"""Command construction for mod_wsgi-express: config keys become the right flags."""

import pytest
from support import make_configs

from crdsops.runtime.backends.modwsgi import ModWsgiBackend


@pytest.mark.parametrize("mode,embedded", [("embedded", True), ("daemon", False)])
def test_wsgi_mode_selects_embedded_or_daemon(tmp_path, mode, embedded):
    from crdsops.config.loader import load_config

    configs = make_configs(tmp_path, {("hst", "dev"): {"root": str(tmp_path / "r"), "web": {
        "wsgi_mode": mode, "processes": 3, "threads": 5, "port": 8123}}})
    cfg = load_config("hst", "dev", configs)
    argv = ModWsgiBackend().setup_argv(cfg, ("www-data", "www-data"))
    assert ("--embedded-mode" in argv) is embedded
    assert argv[argv.index("--processes") + 1] == "3" and argv[argv.index("--threads") + 1] == "5"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--user") + 1] == "www-data"
    aliases = [argv[i + 1:i + 3] for i, word in enumerate(argv) if word == "--url-alias"]
    assert ["/unchecked_get/references/hst", str(cfg.cache / "references" / "hst")] in aliases


def test_apache_passes_the_json_rpc_view_bodies_past_its_own_limit(tmp_path):
    """The view answers a body over its 16 MiB with a JSON-RPC error; Apache's default (10 MB) would
    answer HTML 413 before it, so Apache's limit is far above the view's."""
    from crdsops.config.loader import load_config

    cfg = load_config("hst", "dev", make_configs(tmp_path, {("hst", "dev"): {"root": str(tmp_path / "r")}}))
    argv = ModWsgiBackend().setup_argv(cfg, None)
    assert int(argv[argv.index("--limit-request-body") + 1]) >= 64 * 2**20
