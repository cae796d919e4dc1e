"""Shared fixtures: every test gets its own scratch cache and server_files."""
import json
import os
import shutil
import tempfile

from django.conf import settings
from django.core.management import call_command
from django.test import Client, TestCase, override_settings

from crds_server.catalog import infocache


class ScratchCacheTestCase(TestCase):
    def setUp(self):
        super().setUp()
        self.scratch = tempfile.mkdtemp(prefix="crds_server_test_")
        self.addCleanup(shutil.rmtree, self.scratch, ignore_errors=True)
        override = override_settings(
            CRDS_PATH=os.path.join(self.scratch, "cache"),
            CRDS_SERVER_FILES=os.path.join(self.scratch, "server_files"),
        )
        override.enable()
        self.addCleanup(override.disable)
        infocache.clear()  # each test seeds its own catalog
        self.addCleanup(infocache.clear)
        self.obs = settings.CRDS_OBSERVATORY

    def cache_path(self, section, name):
        return os.path.join(settings.CRDS_PATH, section, self.obs, name)

    def write_scratch(self, name, content):
        path = os.path.join(self.scratch, "incoming", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(content)
        return path


class SeededTestCase(ScratchCacheTestCase):
    """A scratch cache holding the demo set."""

    def setUp(self):
        super().setUp()
        call_command("seed_demo", stdout=open(os.devnull, "w"))
        # CSRF checks on: the JSON-RPC endpoint must work without a token.
        self.client = Client(enforce_csrf_checks=True)

    def rpc(self, method, params=(), url="/json/", request_id="t-1"):
        body = json.dumps({"jsonrpc": "1.0", "method": method, "params": params, "id": request_id})
        response = self.client.post(url, body, content_type="application/json")
        self.assertEqual(response.status_code, 200, response.content[:300])
        self.assertEqual(response["Content-Type"], "application/json")
        return response.json()

    def rpc_result(self, method, *params):
        answer = self.rpc(method, list(params))
        self.assertIsNone(answer["error"], answer["error"])
        return answer["result"]

    def rpc_error(self, method, params=()):
        answer = self.rpc(method, params)
        self.assertIsNone(answer["result"])
        self.assertTrue(answer["error"]["message"])
        return answer["error"]["message"]
