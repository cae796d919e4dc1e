"""Seed a fresh server with a small demo set (two contexts in the history) so it has something to serve."""
import datetime
import os
import tempfile

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from crds_server.catalog import support
from crds_server.catalog.demo import demo_set
from crds_server.catalog.ingest import IngestError, ingest_file, record_context
from crds_server.catalog.models import CatalogFile
from crds_server.catalog.queries import observatory_files


def utc(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)


class Command(BaseCommand):
    help = ("Add a small deterministic demo set (two contexts, their mappings and references, one rejected "
            "and one blacklisted file); no-op when the catalog has files.")

    def handle(self, *args, **options):
        existing = observatory_files().count()
        if existing:
            self.stdout.write(f"seed_demo: catalog already has {existing} files; nothing to do")
            return
        support.ensure_layout()
        demo = demo_set(settings.CRDS_OBSERVATORY)
        # All rows or none: a half-seeded catalog would make the next run a silent no-op.
        with transaction.atomic(), tempfile.TemporaryDirectory(prefix="crds_seed_") as scratch:
            for name, detail in demo.details.items():
                path = os.path.join(scratch, name)
                with open(path, "wb") as out:
                    out.write(detail.content)
                try:
                    done = ingest_file(path, state="operational", description="crdsops demo file")
                except IngestError as exc:
                    raise CommandError(str(exc)) from exc
                CatalogFile.objects.filter(name=name).update(
                    delivery_date=utc(detail.delivered), blacklisted=detail.blacklisted, rejected=detail.rejected)
                self.stdout.write(f"{done.status} {done.name} {done.size} {done.sha1sum}")
            for start, context in demo.history:
                record_context(context, "demo context seeded by crdsops", start_date=utc(start))
        support.write_catalog_listing()
        support.write_cache_config()
        self.stdout.write(f"seed_demo: {len(demo.files)} files, operational context {demo.context}, "
                          f"bad files {' '.join(demo.bad_files)}")
