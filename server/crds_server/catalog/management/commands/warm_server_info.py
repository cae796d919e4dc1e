"""Write get_server_info's download_metadata for the next start (see catalog/warm.py)."""
import json

from django.core.management.base import BaseCommand

from crds_server.catalog import warm


class Command(BaseCommand):
    help = "Precompute download_metadata into OUT (default CRDS_SERVER_INFO_WARM) for the next start."

    def add_arguments(self, parser):
        parser.add_argument("--out", default=None)

    def handle(self, *args, **options):
        from django.conf import settings

        out = options["out"] or settings.CRDS_SERVER_INFO_WARM
        self.stdout.write(json.dumps({"out": out, "fingerprint": warm.write(out)}))
