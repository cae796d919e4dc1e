"""Settings split: base (common), local (runserver), production (mod_wsgi), test.

Everything comes from the environment described in docs/internals.md.
"""
