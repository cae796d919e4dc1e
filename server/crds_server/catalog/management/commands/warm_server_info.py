"""Write get_server_info's download_metadata for the next swap (see catalog/warm.py)."""
import json
import sys

from django.core.management.base import BaseCommand

from crds_server.catalog import warm


class Command(BaseCommand):
    help = ("Precompute download_metadata into OUT (default CRDS_SERVER_INFO_WARM) for the catalog generation "
            "GENERATION (default: the live one). With --when-told: start now, compute once a line 'go' arrives on "
            "stdin (end of input: exit without writing), so a restore pays Django's start while it still loads "
            "the database.")

    def add_arguments(self, parser):
        parser.add_argument("--out", default=None)
        parser.add_argument("--generation", default=None,
                            help="the catalog generation the swap of this database will write")
        parser.add_argument("--when-told", action="store_true")

    def handle(self, *args, **options):
        from django.conf import settings

        from crds_server.catalog import queries  # noqa: F401 - imported before the wait, not after

        out = options["out"] or settings.CRDS_SERVER_INFO_WARM
        if options["when_told"] and sys.stdin.readline().strip() != "go":
            self.stdout.write(json.dumps({"out": None}))
            return
        self.stdout.write(json.dumps({"out": out, **warm.write(out, options["generation"])}))
