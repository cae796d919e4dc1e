"""django-dbbackup connector for MySQL/MariaDB that keeps credentials off argv.

The stock MysqlDumpConnector appends --user/--password from settings, visible to
anyone running `ps`.  Here both mysqldump and mysql read the server's [client] option
file (CRDS_DB_OPTION_FILE), which must be their FIRST argument or they ignore it.
"""
import shlex

from dbbackup.db.mysql import MysqlDumpConnector


class MysqlOptionFileConnector(MysqlDumpConnector):
    # --single-transaction: a consistent InnoDB snapshot without locking the server.
    dump_options = ("--single-transaction", "--quick", "--routines")

    def _option_file(self):
        return self.settings["OPTIONS"]["read_default_file"]

    def _connection_args(self):
        args = [f"--defaults-extra-file={self._option_file()}"]
        if self.settings.get("HOST"):
            args.append(f"--host={self.settings['HOST']}")
        if self.settings.get("PORT"):
            args.append(f"--port={self.settings['PORT']}")
        return args

    def dump_argv(self):
        name = self.settings["NAME"]
        argv = [self.dump_cmd, *self._connection_args(), *self.dump_options]
        argv += [f"--ignore-table={name}.{table}" for table in self.exclude]
        return [*argv, name]

    def restore_argv(self):
        return [self.restore_cmd, *self._connection_args(), self.settings["NAME"]]

    def _create_dump(self):
        cmd = f"{self.dump_prefix} {shlex.join(self.dump_argv())} {self.dump_suffix}"
        stdout, _stderr = self.run_command(cmd, env=self.dump_env)
        return stdout

    def _restore_dump(self, dump):
        cmd = f"{self.restore_prefix} {shlex.join(self.restore_argv())} {self.restore_suffix}"
        return self.run_command(cmd, stdin=dump, env=self.restore_env)
