"""The real crds client (pip install crds) against our server, as a user would run it."""
import hashlib
import json
import subprocess
from pathlib import Path

from serverproc import PYTHON, clean_environ, rpc

CRDS = str(Path(PYTHON).parent / "crds")


def client_env(server, cache):
    env = clean_environ()
    env.update(CRDS_SERVER_URL=server.url, CRDS_PATH=str(cache))
    return env


def sha1(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def demo_files(server):
    references = rpc(server.url, "list_references", server.obs, "*")
    rmaps = rpc(server.url, "list_mappings", server.obs, "*.rmap")
    return references[0], rmaps[0]


def organize_flat(obs, cache):
    """`crds sync --organize=flat` for hst; for jwst pre-set the mode instead.

    --organize imports the observatory's locator, and crds.jwst.locate needs stdatamodels
    (the crds[jwst] extra), which the server stack does not carry.  Writing the mode file
    is what --organize would leave behind on an empty cache.
    """
    if obs == "hst":
        return ["--organize=flat"]
    mode = cache / "config" / obs / "ref_cache_subdir_mode"
    mode.parent.mkdir(parents=True)
    mode.write_text("flat\n")
    return []


def test_sync_downloads_catalog_files(running_server, tmp_path):
    server, cache = running_server, tmp_path / "client-cache"
    reference, mapping = demo_files(server)
    result = subprocess.run(
        [CRDS, "sync", f"--{server.obs}", *organize_flat(server.obs, cache), "--files", reference, mapping],
        env=client_env(server, cache), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    catalog = rpc(server.url, "get_file_info_map", server.obs, [reference, mapping], ["sha1sum", "size"])
    for name, section in ((reference, "references"), (mapping, "mappings")):
        local = cache / section / server.obs / name
        assert local.is_file(), result.stderr
        assert sha1(local) == catalog[name]["sha1sum"]
        assert local.stat().st_size == int(catalog[name]["size"])
        assert sha1(local) == sha1(server.where / "cache" / section / server.obs / name)


def test_client_reads_server_info(running_server, tmp_path):
    server = running_server
    code = (
        "import json, crds.client.api as a\n"
        "info = a.get_server_info()\n"
        "print(json.dumps({k: info[k] for k in ('observatory', 'operational_context', 'reference_url',"
        " 'mapping_url', 'bad_files_list', 'connected')}))\n"
        "print(json.dumps(a.get_default_context(%r, 'latest')))\n" % server.obs
    )
    result = subprocess.run([PYTHON, "-c", code], env=client_env(server, tmp_path / "c"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    info_line, context_line = result.stdout.strip().splitlines()[-2:]
    info = json.loads(info_line)
    context = rpc(server.url, "get_catalog_counts")["operational_context"]
    assert info["observatory"] == server.obs
    assert info["operational_context"] == context == json.loads(context_line)
    assert info["connected"] is True
    # Built from the request, not from CRDS_SERVER_URL (which names an unreachable host here).
    assert info["reference_url"] == {server.obs: f"{server.url}/unchecked_get/references/{server.obs}/"}
    assert info["mapping_url"] == {server.obs: f"{server.url}/unchecked_get/mappings/{server.obs}/"}
