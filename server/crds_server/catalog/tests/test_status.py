from django.conf import settings

from crds_server.catalog.demo import demo_set

from .base import ScratchCacheTestCase, SeededTestCase


class StatusPageTests(SeededTestCase):
    def test_says_which_server(self):
        page = self.client.get("/").content.decode()
        demo = demo_set(self.obs)
        for text in (self.obs, settings.CRDS_KIND, settings.CRDS_SERVER_URL, demo.context,
                     settings.CRDS_DB_ENGINE, f"<th align='left'>references</th><td>{len(demo.references)}</td>",
                     f"<th align='left'>mappings</th><td>{len(demo.mappings)}</td>",
                     f"<th align='left'>contexts</th><td>{len(demo.history)}</td>"):
            self.assertIn(text, page)

    def test_health(self):
        response = self.client.get("/health")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["status"], "ok")


class EmptyServerTests(ScratchCacheTestCase):
    def test_status_page_before_seeding(self):
        self.assertIn("(none)", self.client.get("/").content.decode())
