"""Ingest files into the cache and the catalog."""
from django.core.management.base import BaseCommand, CommandError

from crds_server.catalog import support
from crds_server.catalog.ingest import IngestError, ingest_file


class Command(BaseCommand):
    help = "Copy FILEs into the CRDS cache and record them in the catalog (idempotent for identical files)."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", metavar="FILE")
        parser.add_argument("--state", default="delivered", help="catalog state (default: delivered)")
        parser.add_argument("--description", default="", help="description recorded for every file")

    def handle(self, *args, **options):
        support.ensure_layout()
        failures = []
        for path in options["files"]:
            try:
                done = ingest_file(path, state=options["state"], description=options["description"])
            except IngestError as exc:
                failures.append(str(exc))
                self.stderr.write(f"refused {exc}")
                continue
            self.stdout.write(f"{done.status} {done.name} {done.size} {done.sha1sum}")
        support.write_catalog_listing()
        if failures:
            raise CommandError(f"{len(failures)} of {len(options['files'])} files refused")
