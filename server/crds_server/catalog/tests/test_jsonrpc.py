import json
import threading
import time
from unittest import mock

from django.conf import settings
from django.test import Client, SimpleTestCase, override_settings

from crds_server.catalog import infocache, queries
from crds_server.catalog.demo import demo_set
from crds_server.catalog.ingest import sha1_of

from .base import SeededTestCase


def crds_decode(message):
    """The real client's decoder: the server's encoding must round-trip through it."""
    from crds.client.proxy import crds_decode as decode

    return decode(message)


class ServerInfoTests(SeededTestCase):
    def test_fields_the_client_reads(self):
        info = self.rpc_result("get_server_info")
        demo = demo_set(self.obs)
        self.assertEqual(info["observatory"], self.obs)
        self.assertEqual(info["operational_context"], demo.context)
        self.assertEqual(info["edit_context"], demo.context)
        self.assertEqual(info["bad_files_list"], demo.bad_files)
        self.assertEqual(info["bad_files"], " ".join(demo.bad_files))
        self.assertEqual(info["versions_context"], demo.context)
        self.assertIs(info["force_remote_mode"], False)
        self.assertIn("str", info["crds_version"])
        self.assertEqual(sorted(info["mappings"]), sorted(n for n in demo.files if n.endswith("map")))
        self.assertEqual([row[1] for row in info["context_history"]], [c for _start, c in demo.history[::-1]])
        self.assertRegex(info["last_synced"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

    def test_download_urls_come_from_the_request(self):
        info = self.rpc_result("get_server_info")
        base = "http://testserver/unchecked_get"
        self.assertEqual(info["reference_url"]["unchecked"], {self.obs: f"{base}/references/{self.obs}/"})
        self.assertEqual(info["mapping_url"]["unchecked"], {self.obs: f"{base}/mappings/{self.obs}/"})
        self.assertIn(self.obs, info["reference_url"]["checked"])

    def test_download_metadata_matches_the_cache(self):
        metadata = crds_decode(self.rpc_result("get_server_info")["download_metadata"])
        self.assertEqual(set(metadata), set(demo_set(self.obs).files))
        for name, meta in metadata.items():
            section = "mappings" if name.endswith("map") else "references"
            self.assertEqual(meta["sha1sum"], sha1_of(self.cache_path(section, name)))
            self.assertIsInstance(meta["size"], str)

    def test_client_style_url_with_method_and_id(self):
        answer = self.rpc("get_default_context", [self.obs, None], url="/json/get_default_context/x-00000001/")
        self.assertEqual(answer["result"], demo_set(self.obs).context)
        self.assertEqual(answer["id"], "t-1")


class QueryMethodTests(SeededTestCase):
    def test_default_context_states(self):
        context = demo_set(self.obs).context
        self.assertEqual(self.rpc_result("get_default_context"), context)
        self.assertEqual(self.rpc_result("get_default_context", self.obs, "latest"), context)
        self.assertEqual(self.rpc_result("get_default_context", self.obs, "edit"), context)

    def test_named_params(self):
        answer = self.rpc("get_default_context", {"observatory": self.obs, "state": "latest"})
        self.assertEqual(answer["result"], demo_set(self.obs).context)

    def test_file_info(self):
        context = demo_set(self.obs).context
        info = self.rpc_result("get_file_info", context, context)
        self.assertEqual(info["name"], context)
        self.assertEqual(info["filekind"], "mapping")
        self.assertEqual(info["size"], str(len(demo_set(self.obs).files[context])))
        self.assertEqual(info["rejected"], "false")
        self.assertEqual(info["state"], "operational")

    def test_file_info_map_with_unknown_and_fields(self):
        context = demo_set(self.obs).context
        infos = self.rpc_result("get_file_info_map", self.obs, [context, "nope.fits"], ["size", "sha1sum"])
        self.assertEqual(infos["nope.fits"], "NOT FOUND")
        self.assertEqual(set(infos[context]), {"size", "sha1sum"})

    def test_file_info_map_all(self):
        infos = self.rpc_result("get_file_info_map", self.obs, None, None)
        self.assertEqual(set(infos), set(demo_set(self.obs).files))

    def test_lists(self):
        demo = demo_set(self.obs)
        self.assertEqual(self.rpc_result("list_mappings", self.obs, "*.pmap"), [c for _start, c in demo.history])
        refs = sorted(n for n in demo.files if n.endswith(".fits"))
        self.assertEqual(self.rpc_result("list_references", self.obs, "*"), refs)
        self.assertEqual(self.rpc_result("list_references", self.obs, "*.nothing"), [])

    def test_catalog_counts(self):
        counts = self.rpc_result("get_catalog_counts")
        demo = demo_set(self.obs)
        self.assertEqual(counts["references"], len(demo.references))
        self.assertEqual(counts["mappings"], len(demo.mappings))
        self.assertEqual(counts["contexts"], len(demo.history))
        self.assertEqual(counts["operational_context"], demo_set(self.obs).context)
        self.assertEqual(counts["observatory"], self.obs)

    def test_context_history(self):
        history = self.rpc_result("get_context_history", self.obs)
        demo = demo_set(self.obs)
        self.assertEqual([tuple(row[:2]) for row in history], demo.history[::-1])


class ErrorTests(SeededTestCase):
    def test_unknown_method(self):
        self.assertIn("unknown method", self.rpc_error("no_such_method"))

    def test_bad_params(self):
        self.assertIn("bad parameters", self.rpc_error("get_file_info", ["a", "b", "c", "d"]))
        self.assertIn("bad parameters", self.rpc_error("get_file_info", {"bogus": 1}))

    def test_unknown_file(self):
        self.assertIn("not known", self.rpc_error("get_file_info", ["x.pmap", "missing.fits"]))

    def test_wrong_observatory(self):
        self.assertIn("serves observatory", self.rpc_error("list_mappings", ["nosuchobs", "*"]))

    def test_internal_exception_is_a_jsonrpc_error(self):
        with self.assertLogs("crds_server.jsonrpc", "ERROR"), \
                mock.patch.object(queries, "catalog_counts", side_effect=RuntimeError("boom")):
            message = self.rpc_error("get_catalog_counts")
        self.assertIn("boom", message)

    def test_malformed_bodies(self):
        for body in ("{not json", "[1, 2]", json.dumps({"params": []})):
            response = self.client.post("/json/", body, content_type="application/json")
            self.assertEqual(response.status_code, 200)
            self.assertTrue(response.json()["error"]["message"])

    def test_get_is_refused_as_json(self):
        response = Client().get("/json/")
        self.assertEqual(response.status_code, 405)
        self.assertIn("POST", response.json()["error"]["message"])


class BadInputTests(SeededTestCase):
    """Whatever arrives at /json/, the answer is a JSON-RPC error with a message, and the server goes on."""

    def post(self, body, url="/json/"):
        response = self.client.post(url, body, content_type="application/json")
        self.assertEqual(response.status_code, 200, response.content[:300])
        self.assertEqual(response["Content-Type"], "application/json", response.content[:300])
        answer = response.json()
        self.assertIsNone(answer["result"])
        self.assertTrue(answer["error"]["message"], answer)
        return answer["error"]

    def assert_still_answers(self):
        self.assertEqual(self.rpc_result("get_default_context"), demo_set(self.obs).context)

    def test_a_body_nested_5000_deep(self):
        error = self.post("[" * 5000)
        self.assertEqual(error["name"], "ParseError")
        self.assertIn("more than 100 levels deep", error["message"])
        self.assert_still_answers()

    def test_nesting_the_parser_accepts_but_no_call_needs(self):
        deep = "[" * 500 + "]" * 500
        for body in (deep, f'{{"method": "get_default_context", "params": [], "id": {deep}}}',
                     f'{{"method": "get_best_references", "params": ["x.pmap", {deep}], "id": 1}}'):
            self.assertIn("more than 100 levels deep", self.post(body)["message"])
        self.assert_still_answers()

    def test_a_20_MB_body_is_refused_as_json(self):
        body = json.dumps({"method": "get_file_info_map", "params": [self.obs, ["x" * 100] * 200_000], "id": 1})
        self.assertGreater(len(body), 20 * 10**6)
        error = self.post(body)
        self.assertEqual(error["name"], "RequestTooLarge")
        self.assertIn(f"request body of {len(body)} bytes is over this server's limit of 16777216 bytes",
                      error["message"])
        self.assert_still_answers()

    @override_settings(CRDS_JSONRPC_MAX_BYTES=1000)
    def test_the_limit_is_the_body_size(self):
        call = {"method": "get_default_context", "params": [], "id": "x"}
        at_limit = json.dumps(call).ljust(1000)
        self.assertEqual(self.client.post("/json/", at_limit, content_type="application/json").json()["result"],
                         demo_set(self.obs).context)
        error = self.post(at_limit + " ")
        self.assertIn("request body of 1001 bytes is over this server's limit of 1000 bytes", error["message"])

    def test_a_body_past_djangos_upload_limit_that_the_client_sends(self):
        """get_file_info_map for 150,000 files (3.3 MB: past DATA_UPLOAD_MAX_MEMORY_SIZE) is answered."""
        names = [f"n{i:08d}_{'drk' if i % 2 else 'flt'}.fits" for i in range(150_000)]
        body = json.dumps({"method": "get_file_info_map", "params": [self.obs, names, ["size"]], "id": 7})
        self.assertGreater(len(body), settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        response = self.client.post("/json/", body, content_type="application/json")
        answer = response.json()
        self.assertIsNone(answer["error"])
        self.assertEqual(len(answer["result"]), 150_000)
        self.assertEqual(answer["result"][names[0]], "NOT FOUND")

    def test_odd_bodies(self):
        for body in (b"", b"\xff\xfe\x00", b"null", b'"a string"', b'{"method": 5}', b"1" * 5000,
                     b'{"method": "' + b"m" * 100_000 + b'"}'):
            error = self.post(body)
            self.assertLess(len(error["message"]), 400, error["message"][:400])
        self.assert_still_answers()


class EmptyCatalogTests(SeededTestCase):
    def setUp(self):
        super().setUp()
        from crds_server.catalog.models import CatalogFile, ContextHistory

        CatalogFile.objects.all().delete()
        ContextHistory.objects.all().delete()

    def test_no_context_yet_is_an_error_not_a_crash(self):
        self.assertIn("seed_demo", self.rpc_error("get_default_context"))
        info = self.rpc_result("get_server_info")
        self.assertIsNone(info["operational_context"])
        self.assertEqual(crds_decode(info["download_metadata"]), {})


class ServerInfoCacheTests(SeededTestCase):
    def test_server_info_is_reused_within_the_ttl_and_recomputed_after(self):
        with override_settings(CRDS_SERVER_INFO_TTL=60), \
                mock.patch.object(queries, "server_info", wraps=queries.server_info) as compute:
            first = self.rpc_result("get_server_info")
            second = self.rpc_result("get_server_info")
            self.assertEqual(compute.call_count, 1)
            self.assertEqual(first["operational_context"], second["operational_context"])
            infocache.clear()
            self.rpc_result("get_server_info")
            self.assertEqual(compute.call_count, 2)


class ServerInfoRefreshTests(SimpleTestCase):
    """Past the TTL the old answer is served at once while one background thread recomputes it."""

    def setUp(self):
        infocache.clear()
        self.addCleanup(infocache.clear)

    def test_an_expired_answer_is_served_while_one_refresh_runs(self):
        release, refreshing = threading.Event(), threading.Event()
        calls = []

        def compute():
            calls.append(threading.current_thread().name)
            if len(calls) > 1:
                refreshing.set()
                release.wait(10)  # a slow refresh: requests must not wait for it
            return len(calls)

        with override_settings(CRDS_SERVER_INFO_TTL=1), mock.patch("time.monotonic") as clock:
            clock.return_value = 100.0
            self.assertEqual(infocache.cached("k", compute), 1)
            clock.return_value = 102.0  # past the TTL
            started = time.perf_counter()
            answers = [infocache.cached("k", compute) for _ in range(5)]
            self.assertLess(time.perf_counter() - started, 1.0)
            self.assertEqual(answers, [1] * 5)
            self.assertTrue(refreshing.wait(2), "no refresh started")
            self.assertEqual(len(calls), 2, "one refresh, not one per request")
            self.assertEqual(calls[1], "server-info-refresh")
            release.set()
            for _ in range(100):
                if infocache.cached("k", compute) == 2:
                    break
                time.sleep(0.05)
            self.assertEqual(infocache.cached("k", compute), 2)

    def test_a_refresh_under_way_when_the_cache_is_cleared_does_not_bring_its_answer_back(self):
        release = threading.Event()

        def slow():
            release.wait(10)
            return "before the clear"

        with override_settings(CRDS_SERVER_INFO_TTL=1), mock.patch("time.monotonic") as clock:
            clock.return_value = 100.0
            infocache.cached("k", lambda: "first")
            clock.return_value = 102.0
            self.assertEqual(infocache.cached("k", slow), "first")  # starts the refresh
            infocache.clear()
            release.set()
            for thread in threading.enumerate():
                if thread.name == "server-info-refresh":
                    thread.join(5)
            self.assertEqual(infocache.cached("k", lambda: "after the clear"), "after the clear")
