"""The CRDS server: catalog, JSON-RPC API and file delivery for one observatory."""
