"""The catalog as an SQLite database, for `crds sync --fetch-sqlite-db` and `crds sql`.

The client (crds.client.api.get_sqlite_db) base64-decodes and zlib-decompresses the answer
and writes it to `config/<obs>/crds_db.sqlite3`; `crds sql` lists its tables and runs
queries on them. Tables and columns are those of a CRDS server's download
(`crds_<obs>_catalog`, `crds_<obs>_context_history`), with the CRDS meanings: `type` is
reference or mapping, `filekind` the reference type. Columns this catalog does not
record are empty.
"""
import base64
import sqlite3
import zlib

from django.conf import settings

from . import queries
from .models import ContextHistory

CATALOG_COLUMNS = (
    "id", "name", "blob", "state", "blacklisted", "rejected", "observatory", "instrument", "filekind", "type",
    "derived_from", "sha1sum", "delivery_date", "activation_date", "useafter_date", "change_level", "pedigree",
    "reference_file_type", "size", "uploaded_as", "creator_name", "deliverer_user", "deliverer_email",
    "description", "catalog_link", "replaced_by_filename", "comment", "aperture",
)
HISTORY_COLUMNS = ("id", "start_date", "context", "description")
_INTEGER = {"id", "size", "blacklisted", "rejected"}


def _create(db, table, columns):
    kinds = ", ".join(f"{c} {'INTEGER' if c in _INTEGER else 'TEXT'}" for c in columns)
    db.execute(f"CREATE TABLE {table} ({kinds})")


def _catalog_rows():
    fields = ("id", "name", "state", "blacklisted", "rejected", "observatory", "instrument", "reftype", "filekind",
              "sha1sum", "delivery_date", "size", "description")
    for row in queries.observatory_files().order_by("name").values_list(*fields).iterator(chunk_size=5000):
        values = dict(zip(fields, row, strict=True))
        values.update(
            blob="", type=values.pop("filekind"), filekind=values.pop("reftype"), uploaded_as=values["name"],
            delivery_date=values["delivery_date"].strftime("%Y-%m-%d %H:%M:%S"),
            blacklisted=int(values["blacklisted"]), rejected=int(values["rejected"]),
        )
        yield tuple(values.get(column, "") for column in CATALOG_COLUMNS)


def database_bytes():
    """The catalog and context history as the bytes of an SQLite database file."""
    obs = settings.CRDS_OBSERVATORY
    db = sqlite3.connect(":memory:")
    try:
        catalog, history = f"crds_{obs}_catalog", f"crds_{obs}_context_history"
        _create(db, catalog, CATALOG_COLUMNS)
        _create(db, history, HISTORY_COLUMNS)
        marks = ", ".join("?" * len(CATALOG_COLUMNS))
        db.executemany(f"INSERT INTO {catalog} VALUES ({marks})", _catalog_rows())
        entries = ContextHistory.objects.filter(observatory=obs).order_by("start_date", "id")
        db.executemany(f"INSERT INTO {history} VALUES (?, ?, ?, ?)", (
            (e.id, e.start_date.strftime("%Y-%m-%d %H:%M:%S"), e.context, e.description) for e in entries))
        db.commit()
        return db.serialize()
    finally:
        db.close()


def encoded_database():
    """What JSON-RPC get_sqlite_db answers: base64 of the zlib-compressed database file."""
    return base64.b64encode(zlib.compress(database_bytes(), 6)).decode("ascii")
