"""Contexts, closures and best references, answered by the crds library on the server's cache."""
import base64
import os
import socket
import sqlite3
import zlib
from unittest import mock

from django.core.management import call_command

from crds_server.catalog import rules
from crds_server.catalog.demo import demo_dataset, demo_set, layout

from .base import SeededTestCase


def local_bestrefs(cache, context, header, reftypes=None):
    """What the client's local mode computes: crds.heavy_client.hv_best_references on a cache holding `context`."""
    from crds.core import rmap, utils

    loaded = rmap.load_mapping(context, path=cache)
    conditioned = utils.condition_header(header)
    include = reftypes
    if include is None:
        include = list(set(loaded.get_filekinds(conditioned))
                       & set(loaded.locate.header_to_reftypes(conditioned, context)))
    return loaded.get_best_references(loaded.minimize_header(conditioned), include=include)


class RulesCase(SeededTestCase):
    def setUp(self):
        super().setUp()
        rules.clear()
        self.addCleanup(rules.clear)
        self.demo, self.dataset, self.layout = demo_set(self.obs), demo_dataset(self.obs), layout(self.obs)
        self.old = self.demo.history[0][1]


class ClosureTests(RulesCase):
    def test_mapping_and_reference_names_of_each_level(self):
        demo, lay = self.demo, self.layout
        names = self.rpc_result("get_mapping_names", demo.context)
        self.assertEqual(names, sorted(n for n in demo.mappings if "0000" not in n or lay.flat in n))
        self.assertEqual(self.rpc_result("get_mapping_names", self.old),
                         sorted(n for n in demo.mappings if "0000" in n))
        refs = self.rpc_result("get_reference_names", demo.context)
        self.assertEqual(refs, demo.references)  # the operational rules name every demo reference
        self.assertEqual(self.rpc_result("get_reference_names", self.old),
                         sorted([lay.refs["blacklisted"], lay.refs["flat"]]))
        imap = f"{self.obs}_{lay.instrument}_0001.imap"
        self.assertEqual(self.rpc_result("get_mapping_names", imap), [n for n in names if not n.endswith(".pmap")])
        rmap = f"{self.obs}_{lay.instrument}_{lay.flat}_0000.rmap"
        self.assertEqual(self.rpc_result("get_mapping_names", rmap), [rmap])
        self.assertEqual(self.rpc_result("get_reference_names", rmap), [lay.refs["flat"]])

    def test_symbolic_names_resolve_first(self):
        self.assertEqual(self.rpc_result("get_mapping_names", f"{self.obs}-operational"),
                         self.rpc_result("get_mapping_names", self.demo.context))
        self.assertEqual(self.rpc_result("get_reference_names", f"{self.obs}-2022-01-01T00:00:00"),
                         self.rpc_result("get_reference_names", self.old))

    def test_required_parkeys(self):
        parkeys = self.rpc_result("get_required_parkeys", self.demo.context)
        lay = self.layout
        self.assertEqual(set(parkeys), {lay.instrument})
        self.assertLessEqual({lay.instrument_key, *lay.match_keys, *lay.date_keys}, set(parkeys[lay.instrument]))
        rmap = f"{self.obs}_{lay.instrument}_{lay.dark}_0001.rmap"
        self.assertLessEqual({lay.match_keys[0], *lay.date_keys}, set(self.rpc_result("get_required_parkeys", rmap)))

    def test_unknown_mapping_is_an_error_naming_it(self):
        for method in ("get_mapping_names", "get_reference_names", "get_required_parkeys"):
            self.assertIn("nope_0042.pmap", self.rpc_error(method, ["nope_0042.pmap"]))

    def test_mapping_in_cache_but_not_in_catalog_is_unknown(self):
        from crds_server.catalog.models import CatalogFile

        CatalogFile.objects.filter(name=self.old).delete()
        self.assertIn("not a mapping known", self.rpc_error("get_mapping_names", [self.old]))


class ContextTests(RulesCase):
    def test_states(self):
        demo = self.demo
        self.assertEqual(self.rpc_result("get_default_context"), demo.context)
        for state in ("latest", "operational", "edit", "build", "versions"):
            self.assertEqual(self.rpc_result("get_default_context", self.obs, state), demo.context, state)
        self.assertEqual(self.rpc_result("get_build_context", self.obs, "1.14.0"), demo.context)
        self.assertIn("unknown context state", self.rpc_error("get_default_context", [self.obs, "bogus"]))

    def test_edit_is_the_newest_delivered_pmap(self):
        path = self.write_scratch(f"{self.obs}_0099.pmap", self.demo.files[self.demo.context])
        call_command("ingest", path, stdout=open(os.devnull, "w"))
        self.assertEqual(self.rpc_result("get_default_context", self.obs, "edit"), f"{self.obs}_0099.pmap")
        self.assertEqual(self.rpc_result("get_context_by_date", f"{self.obs}-edit", self.obs), f"{self.obs}_0099.pmap")
        self.assertEqual(self.rpc_result("get_default_context", self.obs, "latest"), self.demo.context)

    def test_dates_against_the_history(self):
        obs, demo = self.obs, self.demo
        cases = {
            "2030-01-01T00:00:00": demo.context,
            f"{obs}-2030-01-01T00:00:00": demo.context,
            f"{obs}-2024-01-01T00:00:00": demo.context,  # the switch itself belongs to the new context
            f"{obs}-2023-12-31T23:59:59": self.old,
            f"{obs}-2022-01-01": self.old,
            f"{obs}-2022-01-01T00:00:00.5": self.old,
            f"{obs}-operational": demo.context,
            f"{obs}-latest": demo.context,
            "latest": demo.context,
        }
        for spec, expected in cases.items():
            self.assertEqual(self.rpc_result("get_context_by_date", spec, obs), expected, spec)

    def test_a_date_in_seconds_covers_its_second(self):
        import datetime

        from crds_server.catalog.models import ContextHistory

        start = datetime.datetime(2026, 6, 1, 12, 0, 0, 700000, tzinfo=datetime.UTC)
        ContextHistory.objects.create(observatory=self.obs, context=self.old, start_date=start)
        spec = f"{self.obs}-2026-06-01T12:00:00"
        self.assertEqual(self.rpc_result("get_context_by_date", spec, self.obs), self.old)
        self.assertEqual(self.rpc_result("get_context_by_date", spec + ".5", self.obs), self.demo.context)
        self.assertEqual(self.rpc_result("get_context_by_date", f"{self.obs}-2026-06-01T11:59:59", self.obs),
                         self.demo.context)

    def test_recorded_contexts_start_in_whole_seconds(self):
        from crds_server.catalog.ingest import record_context

        entry = record_context(self.old, "test")
        self.assertEqual(entry.start_date.microsecond, 0)
        self.assertEqual(self.rpc_result("get_context_by_date", f"{self.obs}-{entry.start_date:%Y-%m-%dT%H:%M:%S}",
                                         self.obs), self.old)

    def test_instrument_and_type_forms(self):
        obs, lay = self.obs, self.layout
        self.assertEqual(self.rpc_result("get_context_by_date", f"{obs}-{lay.instrument}-2022-01-01T00:00:00", obs),
                         f"{obs}_{lay.instrument}_0000.imap")
        self.assertEqual(self.rpc_result("get_context_by_date", f"{obs}-{lay.instrument}-{lay.dark}-operational", obs),
                         f"{obs}_{lay.instrument}_{lay.dark}_0001.rmap")
        self.assertIn("has no", self.rpc_error("get_context_by_date", [f"{obs}-nosuchinstr-operational", obs]))

    def test_bad_dates_and_names(self):
        obs = self.obs
        self.assertIn("the history starts at 2020-01-01T00:00:00",
                      self.rpc_error("get_context_by_date", [f"{obs}-2010-01-01T00:00:00", obs]))
        self.assertIn("bad date", self.rpc_error("get_context_by_date", [f"{obs}-2030-13-45T00:00:00", obs]))
        self.assertIn("neither", self.rpc_error("get_context_by_date", ["what-is-this", obs]))
        self.assertIn("serves observatory", self.rpc_error("get_context_by_date", ["roman-2030-01-01", obs]))
        self.assertIn("serves observatory", self.rpc_error("get_context_by_date", ["2030-01-01", "nosuchobs"]))


class BestRefsTests(RulesCase):
    def test_the_same_as_the_clients_local_mode(self):
        cache = os.path.dirname(self.cache_path("mappings", "x"))
        header = {key: str(value) for key, value in self.dataset.header.items()}  # as the client sends it
        for context in (self.demo.context, self.old):
            answer = self.rpc_result("get_best_references", context, header, None)
            self.assertEqual(answer, local_bestrefs(cache, context, self.dataset.header), context)
        self.assertEqual(self.rpc_result("get_best_references", self.demo.context, header, None), self.dataset.bestrefs)

    def test_reftypes_and_symbolic_context(self):
        lay = self.layout
        answer = self.rpc_result("get_best_references", f"{self.obs}-operational", self.dataset.header, [lay.dark])
        self.assertEqual(answer, {lay.dark: lay.refs["current"]})
        old = self.rpc_result("get_best_references", f"{self.obs}-2022-01-01T00:00:00", self.dataset.header, [lay.dark])
        self.assertEqual(old, {lay.dark: lay.refs["blacklisted"]})

    def test_no_match_is_not_found_per_type_and_bad_input_is_an_error(self):
        lay = self.layout
        header = dict(self.dataset.header, **{lay.match_keys[0]: "NOSUCHDETECTOR"})
        answer = self.rpc_result("get_best_references", self.demo.context, header, None)
        self.assertTrue(all(value.startswith("NOT FOUND") for value in answer.values()), answer)
        header = dict(self.dataset.header, **{lay.instrument_key: "NOSUCHINSTRUMENT"})
        self.assertIn("cannot compute best references",
                      self.rpc_error("get_best_references", [self.demo.context, header, None]))
        self.assertIn("header must be", self.rpc_error("get_best_references", [self.demo.context, "x", None]))
        self.assertIn("reftypes must be", self.rpc_error("get_best_references", [self.demo.context, header, "dark"]))
        self.assertIn("not a mapping known", self.rpc_error("get_best_references", ["nope.pmap", header, None]))

    def test_by_header_map(self):
        lay = self.layout
        bad = dict(self.dataset.header, **{lay.instrument_key: "NOSUCHINSTRUMENT"})
        answer = self.rpc_result("get_best_references_by_header_map", self.demo.context,
                                 {"good": self.dataset.header, "bad": bad}, None)
        self.assertEqual(answer["good"], self.dataset.bestrefs)
        self.assertTrue(answer["bad"].startswith("NOT FOUND"), answer["bad"])

    def test_never_reaches_the_network(self):
        attempts = []
        real_connect = socket.socket.connect

        def connect(sock, address):
            attempts.append(address)
            return real_connect(sock, address)

        with mock.patch.object(socket.socket, "connect", connect):
            self.rpc_result("get_best_references", self.demo.context, self.dataset.header, None)
            self.rpc_result("get_mapping_names", self.old)
        self.assertEqual(attempts, [])

    def test_contexts_are_loaded_once_then_reloaded_after_an_ingest(self):
        from crds.core import rmap

        def loads_of_the_context():  # nested mappings load through the same function
            return sum(1 for call in load.call_args_list if call.args[0].endswith(self.demo.context))

        with mock.patch.object(rmap, "load_mapping", wraps=rmap.load_mapping) as load:
            for _ in range(3):
                self.rpc_result("get_best_references", self.demo.context, self.dataset.header, None)
                self.rpc_result("get_mapping_names", self.demo.context)
            self.assertEqual(loads_of_the_context(), 1)
            path = self.write_scratch(f"{self.obs}_0099.pmap", self.demo.files[self.demo.context])
            call_command("ingest", path, stdout=open(os.devnull, "w"))
            self.rpc_result("get_best_references", self.demo.context, self.dataset.header, None)
            self.assertEqual(loads_of_the_context(), 2)


    def test_a_context_loading_while_the_caches_are_dropped_is_not_kept(self):
        """A new catalog generation (serving.drop_catalog_caches) arriving during a load: that load
        answers its own request, and the next one loads the context again from the new catalog."""
        from crds.core import rmap

        real, loads = rmap.load_mapping, []

        def load_across_a_new_generation(name, **keys):
            mapping = real(name, **keys)
            if name == self.demo.context:
                loads.append(name)
                if len(loads) == 1:
                    rules.clear()  # what the generation check does in another thread meanwhile
            return mapping

        with mock.patch.object(rmap, "load_mapping", side_effect=load_across_a_new_generation):
            for _ in range(3):
                self.assertEqual(self.rpc_result("get_best_references", self.demo.context, self.dataset.header, None),
                                 self.dataset.bestrefs)
        self.assertEqual(len(loads), 2)  # the second request loaded it again; the third used the cache

class CatalogDownloadTests(RulesCase):
    def test_sqlite_db_as_the_client_decodes_it(self):
        encoded = self.rpc_result("get_sqlite_db", self.obs)
        path = os.path.join(self.scratch, "crds_db.sqlite3")
        with open(path, "wb") as out:  # crds.client.api.get_sqlite_db does exactly this
            out.write(zlib.decompress(base64.b64decode(encoded)))
        db = sqlite3.connect(path)
        self.addCleanup(db.close)
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        self.assertEqual(tables, {f"crds_{self.obs}_catalog", f"crds_{self.obs}_context_history"})
        rows = db.execute(f"select name, type, filekind, sha1sum, size, blacklisted, rejected "
                          f"from crds_{self.obs}_catalog").fetchall()
        catalog = self.rpc_result("get_file_info_map", self.obs, None, None)
        self.assertEqual({row[0] for row in rows}, set(self.demo.files))
        for name, kind, filekind, sha1sum, size, blacklisted, rejected in rows:
            self.assertEqual((kind, sha1sum, str(size)), (catalog[name]["filekind"], catalog[name]["sha1sum"],
                                                          catalog[name]["size"]))
            self.assertEqual(filekind, catalog[name]["reftype"])
            self.assertEqual(bool(blacklisted or rejected), name in self.demo.bad_files)
        history = db.execute(f"select start_date, context from crds_{self.obs}_context_history order by id").fetchall()
        self.assertEqual(history, self.demo.history)

    def test_verification_fields_of_bad_files(self):
        """What sync --check-files/--purge-rejected/--purge-blacklisted read."""
        lay = self.layout
        fields = ["size", "rejected", "blacklisted", "state", "sha1sum"]
        infos = self.rpc_result("get_file_info_map", self.obs, list(lay.refs.values()), fields)
        self.assertEqual((infos[lay.refs["blacklisted"]]["blacklisted"], infos[lay.refs["blacklisted"]]["rejected"]),
                         ("true", "false"))
        self.assertEqual((infos[lay.refs["rejected"]]["blacklisted"], infos[lay.refs["rejected"]]["rejected"]),
                         ("false", "true"))
        self.assertEqual(infos[lay.refs["current"]]["blacklisted"] + infos[lay.refs["current"]]["rejected"],
                         "falsefalse")
        for info in infos.values():
            self.assertEqual(set(info), set(fields))

    def test_urls(self):
        lay, base = self.layout, "http://testserver/unchecked_get"
        ref, pmap = lay.refs["current"], self.demo.context
        self.assertEqual(self.rpc_result("get_reference_url", pmap, ref), f"{base}/references/{self.obs}/{ref}")
        self.assertEqual(self.rpc_result("get_mapping_url", pmap, pmap), f"{base}/mappings/{self.obs}/{pmap}")
        self.assertEqual(self.rpc_result("get_url", pmap, ref), f"{base}/references/{self.obs}/{ref}")
        self.assertEqual(self.client.get(self.rpc_result("get_url", pmap, pmap)).status_code, 200)
        self.assertIn("not known", self.rpc_error("get_mapping_url", [pmap, ref]))
        self.assertIn("not known", self.rpc_error("get_url", [pmap, "nope.fits"]))


class NotServedTests(RulesCase):
    def test_archive_and_other_services_say_what_is_missing(self):
        calls = {
            "get_dataset_headers_by_id": [self.demo.context, ["J8BT05NJQ"], None],
            "get_dataset_ids": [self.demo.context, self.layout.instrument, None],
            "get_best_references_by_ids": [self.demo.context, ["J8BT05NJQ"], None, False],
            "get_aui_best_references": ["2030-01-01", ["J8BT05NJQ"]],
            "get_affected_datasets": [self.obs, None, None],
        }
        for method, params in calls.items():
            answer = self.rpc(method, params)
            self.assertIsNone(answer["result"])
            self.assertEqual(answer["error"]["name"], "ServiceNotAvailable")
            self.assertIn("no archive dataset service", answer["error"]["message"])
            self.assertIn(method, answer["error"]["message"])
        self.assertIn("calibration software versions", self.rpc_error("get_system_versions", ["1.14.0", "null"]))
        self.assertIn("pushed contexts", self.rpc_error("push_remote_context", [self.obs, "latest", "key", "x.pmap"]))
        self.assertIn("jpoll", self.rpc_error("jpoll_pull_messages", ["key", None]))
