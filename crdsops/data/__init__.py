"""A server's data: the backup ``manifest``, making backups (``backup``), putting them back
(``restore``) and the nightly ``schedule``. Imports config, db and runtime below it.
"""
