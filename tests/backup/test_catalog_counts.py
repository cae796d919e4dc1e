"""crdsops counts the catalog in SQL (a backup's manifest, a replayed restore's health check) the way
the server does (``manage.py catalog_counts``, JSON-RPC ``get_catalog_counts``): the two must agree,
or every restore of the backup would fail its health check."""

from __future__ import annotations

import json

from mariadb import requires_mysql

from crdsops.db import catalog

# ties on start_date: the newest id wins (the model orders by -start_date, -id); another observatory's
# rows count nowhere; a context named in the future of the seeded ones becomes the operational one
ROWS = """
INSERT INTO catalog_contexthistory (observatory, context, start_date, description) VALUES
  ('hst', 'hst_0900.pmap', '2031-01-01 00:00:00', 'tie, older id'),
  ('hst', 'hst_0901.pmap', '2031-01-01 00:00:00', 'tie, newer id'),
  ('jwst', 'jwst_0999.pmap', '2032-01-01 00:00:00', 'another observatory');
INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, sha1sum, state,
    blacklisted, rejected, delivery_date, description) VALUES
  ('jwst_other_0001.fits', 'jwst', 'reference', 'nircam', 'flat', 5, 'x', 'operational', 0, 0,
   '2031-01-01 00:00:00', 'another observatory'),
  ('jwst_other_0002.rmap', 'jwst', 'mapping', 'nircam', 'flat', 5, 'z', 'operational', 0, 0,
   '2031-01-01 00:00:00', 'another observatory'),
  ('hst_extra_0001.rmap', 'hst', 'mapping', 'acs', 'biasfile', 5, 'y', 'operational', 1, 0,
   '2031-01-01 00:00:00', 'blacklisted: counted all the same')
"""


def _agree(server):
    def the_servers() -> dict:
        said = server.inv("manage", "--", "catalog_counts").stdout.strip().splitlines()[-1]
        return json.loads(said)

    before = catalog.counts(server.cfg)
    assert before.as_dict() == the_servers()
    for statement in ROWS.strip().split(";"):
        server.sql(statement)
    after = catalog.counts(server.cfg)
    assert after.as_dict() == the_servers()
    assert after.operational_context == "hst_0901.pmap"
    assert (after.mappings, after.contexts) == (before.mappings + 1, before.contexts + 2)


def test_sqlite_counts_agree_with_the_server(sqlite_server):
    _agree(sqlite_server)


@requires_mysql
def test_mysql_counts_agree_with_the_server(mysql_server):
    _agree(mysql_server)
