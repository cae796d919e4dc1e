"""crdsops: operations tooling for CRDS servers (build, install, run, back up, mirror)."""

__version__ = "0.1.0"
