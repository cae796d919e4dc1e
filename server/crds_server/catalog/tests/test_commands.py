import io
import json
import os

from django.core.management import CommandError, call_command

from crds_server.catalog.demo import demo_dataset, demo_set
from crds_server.catalog.ingest import sha1_of
from crds_server.catalog.models import CatalogFile, ContextHistory

from .base import ScratchCacheTestCase


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


class IngestTests(ScratchCacheTestCase):
    def test_records_size_and_sha1sum_and_copies(self):
        name = f"{self.obs}_nircam_dark_0042.fits"
        path = self.write_scratch(name, b"x" * 1234)
        out = run("ingest", path, "--state", "archived", "--description", "a test file")
        row = CatalogFile.objects.get(name=name)
        self.assertEqual((row.size, row.sha1sum, row.state), (1234, sha1_of(path), "archived"))
        self.assertEqual((row.filekind, row.instrument, row.reftype), ("reference", "nircam", "dark"))
        self.assertEqual(row.description, "a test file")
        self.assertEqual(out, f"added {name} 1234 {row.sha1sum}\n")
        with open(self.cache_path("references", name), "rb") as cached:
            self.assertEqual(cached.read(), b"x" * 1234)

    def test_mapping_goes_to_mappings(self):
        path = self.write_scratch(f"{self.obs}_acs_0007.imap", b"header = {}\n")
        run("ingest", path)
        self.assertTrue(os.path.isfile(self.cache_path("mappings", os.path.basename(path))))
        self.assertEqual(CatalogFile.objects.get().filekind, "mapping")

    def test_identical_reingest_is_a_noop(self):
        path = self.write_scratch("abc12345j_drk.fits", b"same")
        run("ingest", path)
        out = run("ingest", path)
        self.assertTrue(out.startswith("unchanged abc12345j_drk.fits 4 "))
        self.assertEqual(CatalogFile.objects.count(), 1)
        self.assertEqual(CatalogFile.objects.get().reftype, "darkfile")

    def test_refuses_different_content_under_an_existing_name(self):
        path = self.write_scratch("abc12345j_drk.fits", b"first")
        run("ingest", path)
        self.write_scratch("abc12345j_drk.fits", b"second, different")
        with self.assertRaises(CommandError):
            run("ingest", path)
        with open(self.cache_path("references", "abc12345j_drk.fits"), "rb") as cached:
            self.assertEqual(cached.read(), b"first")
        self.assertEqual(CatalogFile.objects.get().size, 5)
        self.assertEqual(os.listdir(os.path.dirname(self.cache_path("references", "x"))), ["abc12345j_drk.fits"])

    def test_refuses_missing_file(self):
        with self.assertRaises(CommandError):
            run("ingest", os.path.join(self.scratch, "nope.fits"))
        self.assertEqual(CatalogFile.objects.count(), 0)


class SeedDemoTests(ScratchCacheTestCase):
    def test_seeds_once(self):
        out = run("seed_demo")
        demo = demo_set(self.obs)
        self.assertIn(f"operational context {demo.context}", out)
        self.assertEqual(CatalogFile.objects.count(), len(demo.files))
        # newest first: the operational context heads the history, which keeps the demo's dates
        history = ContextHistory.objects.values_list("start_date", "context")
        self.assertEqual([(f"{start:%Y-%m-%d %H:%M:%S}", name) for start, name in history], demo.history[::-1])
        self.assertEqual(history[0][1], demo.context)
        bad = CatalogFile.objects.filter(blacklisted=True) | CatalogFile.objects.filter(rejected=True)
        self.assertEqual(sorted(bad.values_list("name", flat=True)), demo.bad_files)
        self.assertEqual(CatalogFile.objects.filter(blacklisted=True).count(), 1)
        self.assertEqual(CatalogFile.objects.filter(rejected=True).count(), 1)
        again = run("seed_demo")
        self.assertIn("nothing to do", again)
        self.assertEqual(CatalogFile.objects.count(), len(demo.files))
        self.assertEqual(ContextHistory.objects.count(), len(demo.history))

    def test_deterministic_and_consistent_with_cache(self):
        self.assertEqual(demo_set(self.obs).files, demo_set(self.obs).files)
        run("seed_demo")
        for row in CatalogFile.objects.all():
            section = "mappings" if row.filekind == "mapping" else "references"
            self.assertEqual(sha1_of(self.cache_path(section, row.name)), row.sha1sum)

    def test_writes_support_directories(self):
        from django.conf import settings

        run("seed_demo")
        config = os.path.join(settings.CRDS_PATH, "config", self.obs)
        self.assertIn("server_config", os.listdir(config))
        listing = os.path.join(settings.CRDS_SERVER_FILES, "catalogs", f"{self.obs}_catalog.txt")
        with open(listing) as handle:
            self.assertEqual(len(handle.readlines()), len(demo_set(self.obs).files))

    def test_mappings_parse_with_crds(self):
        """The demo mappings are real CRDS mappings (correct sha1sum header included)."""
        from crds.core import rmap

        for name, content in demo_set(self.obs).files.items():
            if name.endswith("map"):
                # The base class checks header and sha1sum without loading the children.
                kind = rmap.ReferenceMapping if name.endswith(".rmap") else rmap.Mapping
                loaded = kind.from_string(content.decode(), name, ignore_checksum=False)
                self.assertEqual(loaded.header["name"], name)

    def test_contexts_load_and_select_with_crds(self):
        """Every demo context loads whole with crds.rmap; the operational one selects the dataset's references."""
        from crds.core import rmap

        demo, dataset = demo_set(self.obs), demo_dataset(self.obs)
        where = os.path.join(self.scratch, "maps")
        os.makedirs(where)
        for name in demo.mappings:
            with open(os.path.join(where, name), "wb") as out:
                out.write(demo.files[name])
        closure = set()
        for _start, context in demo.history:
            loaded = rmap.load_mapping(context, path=where)
            loaded.force_load()
            closure |= set(loaded.mapping_names()) | set(loaded.reference_names())
        self.assertEqual(closure, set(demo.files))
        self.assertEqual(loaded.basename, demo.context)
        self.assertEqual(loaded.get_best_references(dataset.header), dataset.bestrefs)
        # the bad files are in the operational rules (so sync --purge-* has work) but not chosen
        self.assertLessEqual(set(demo.bad_files), set(loaded.reference_names()))
        self.assertFalse(set(demo.bad_files) & set(dataset.bestrefs.values()))


class CatalogCountsTests(ScratchCacheTestCase):
    def test_empty_then_seeded(self):
        counts = json.loads(run("catalog_counts"))
        self.assertEqual((counts["references"], counts["mappings"], counts["contexts"]), (0, 0, 0))
        self.assertIsNone(counts["operational_context"])
        run("seed_demo")
        counts = json.loads(run("catalog_counts"))
        demo = demo_set(self.obs)
        self.assertEqual(counts, {
            "references": 4, "mappings": 7, "contexts": 2,
            "operational_context": demo.context, "observatory": self.obs,
            "kind": counts["kind"],
        })
        self.assertEqual((len(demo.references), len(demo.mappings), len(demo.history)), (4, 7, 2))
