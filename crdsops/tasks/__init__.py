"""Invoke tasks: thin wrappers that parse flags, call the library and print.

Module-level imports here are invoke and the standard library only, so `inv --list`
stays as fast as invoke itself; the library is imported inside task bodies.
"""
