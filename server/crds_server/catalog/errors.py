"""Errors whose message is meant for the JSON-RPC caller (the dispatcher turns them into error objects)."""


class RpcError(Exception):
    """An error whose message is meant for the caller."""

    name = "CrdsError"


class UnknownFile(RpcError):
    name = "UnknownFile"


class UnknownContext(RpcError):
    name = "UnknownContext"


class NotServed(RpcError):
    """A service a full CRDS server offers that this one does not (no archive, no web submissions)."""

    name = "ServiceNotAvailable"
