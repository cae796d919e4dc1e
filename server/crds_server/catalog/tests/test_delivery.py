from crds_server.catalog.demo import demo_set

from .base import SeededTestCase


class DeliveryTests(SeededTestCase):
    def get(self, url):
        response = self.client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return response.status_code, body

    def test_reference_and_mapping_bytes(self):
        demo = demo_set(self.obs)
        for name, content in demo.files.items():
            section = "mappings" if name.endswith("map") else "references"
            status, body = self.get(f"/unchecked_get/{section}/{self.obs}/{name}")
            self.assertEqual(status, 200, name)
            self.assertEqual(body, content, name)

    def test_unknown_and_misplaced_files(self):
        context = demo_set(self.obs).context
        for url in (
            f"/unchecked_get/references/{self.obs}/missing.fits",
            f"/unchecked_get/references/{self.obs}/{context}",  # a mapping asked as a reference
            f"/unchecked_get/mappings/otherobs/{context}",  # not this server's observatory
            f"/unchecked_get/pickles/{self.obs}/{context}",
        ):
            self.assertEqual(self.get(url)[0], 404, url)

    def test_traversal_attempts(self):
        secret = self.write_scratch("secret.fits", b"SECRET")
        for name in ("..%2f..%2fincoming%2fsecret.fits", "..", ".hidden.fits", "%2e%2e", "a%00b.fits",
                     "..%5csecret.fits", f"..%2f..%2f..%2f..%2f..%2f..%2f{secret}"):
            status, body = self.get(f"/unchecked_get/references/{self.obs}/{name}")
            self.assertEqual(status, 404, name)
            self.assertNotIn(b"SECRET", body)
        self.assertEqual(self.get(f"/unchecked_get/references/{self.obs}/../../../incoming/secret.fits")[0], 404)
