"""The MySQL connector's command lines, checked without a database."""
from django.test import SimpleTestCase

from crds_server.dbbackup_connectors import MysqlOptionFileConnector


class FakeConnector(MysqlOptionFileConnector):
    def __init__(self, **settings):
        self._settings = settings
        self.exclude = []
        self.commands = []

    def run_command(self, command, stdin=None, env=None):
        self.commands.append(command)
        return "out", "err"


SETTINGS = {
    "NAME": "crds_hst_ops", "HOST": "127.0.0.1", "PORT": "3306", "USER": "leaked", "PASSWORD": "s3cret pw",
    "OPTIONS": {"read_default_file": "/srv/crds/my client.cnf"},
}


class ConnectorTests(SimpleTestCase):
    def test_dump_argv(self):
        argv = FakeConnector(**SETTINGS).dump_argv()
        self.assertEqual(argv[0], "mysqldump")
        self.assertEqual(argv[1], "--defaults-extra-file=/srv/crds/my client.cnf")
        self.assertIn("--single-transaction", argv)
        self.assertEqual(argv[-1], "crds_hst_ops")

    def test_restore_argv(self):
        argv = FakeConnector(**SETTINGS).restore_argv()
        self.assertEqual(argv[:2], ["mysql", "--defaults-extra-file=/srv/crds/my client.cnf"])
        self.assertEqual(argv[-1], "crds_hst_ops")

    def test_no_credentials_on_the_command_line(self):
        connector = FakeConnector(**SETTINGS)
        connector.dump_prefix = connector.dump_suffix = ""
        connector.restore_prefix = connector.restore_suffix = ""
        connector.dump_env = connector.restore_env = {}
        connector._create_dump()
        connector._restore_dump(None)
        for command in connector.commands:
            self.assertNotIn("s3cret", command)
            self.assertNotIn("leaked", command)
            self.assertNotIn("--password", command)
            self.assertIn("'--defaults-extra-file=/srv/crds/my client.cnf'", command)
