"""A server's database: MySQL client commands and option files (``mysql``), compression of
dumps (``compression``), and one engine class per database for dump, stage, swap and
rollback (``engines``). Imports only the config layer below it.
"""
