"""Every error the vault raises on purpose, and the gRPC status each one maps to (by name, so the
core stays free of gRPC; vault.rpc.interceptor turns the name into a grpc.StatusCode).

Messages are shown to callers and written to logs, so they must never contain biometric data,
key material or internal paths: they say what was wrong with the request and what to do.
"""

from __future__ import annotations


class VaultError(Exception):
    """Base class. `status` names the gRPC status code the service answers with."""

    status: str = "INTERNAL"
    reason: str = ""  # where one status has several causes: sent as the `vault-reason` trailer
    trailers: tuple[tuple[str, str], ...] = ()  # further trailers the caller acts on (e.g. `vault-group`)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(VaultError):
    """The request is malformed: missing field, bad id, unsupported modality."""

    status = "INVALID_ARGUMENT"


class InvalidSample(InvalidArgument):
    """A sample cannot be decoded: corrupt, empty, wrong format, too large in pixels."""


class PoorSample(VaultError):
    """A sample decodes but carries too little biometric signal (no face, too few minutiae)."""

    status = "FAILED_PRECONDITION"


class FailedPrecondition(VaultError):
    """The request is valid but the vault's state does not allow it (e.g. template revoked)."""

    status = "FAILED_PRECONDITION"


class NotFound(VaultError):
    """Unknown template or subject. Another tenant's ids are reported exactly like unknown ones."""

    status = "NOT_FOUND"


class Overloaded(VaultError):
    """The extraction queue is full; the caller should back off and retry."""

    status = "RESOURCE_EXHAUSTED"
    reason = "overloaded"


class StoreUnavailable(VaultError):
    """The template store cannot be reached (database down, connections cut): retry shortly."""

    status = "UNAVAILABLE"
    reason = "store-unavailable"


class WrongGroup(VaultError):
    """The caller's tenant is served by another replica group (or by none): nothing was done or
    counted. The right group, when there is one, travels as the `vault-group` trailer so that a
    client (vault_client) resends the call there."""

    status = "FAILED_PRECONDITION"
    reason = "wrong-group"

    def __init__(self, message: str, group: str = ""):
        super().__init__(message)
        self.group = group
        self.trailers = (("vault-group", group),) if group else ()


class GroupLoading(VaultError):
    """The caller's tenant has just come to this replica's group and its templates are still loading:
    retry shortly (never answered from a partial index)."""

    status = "UNAVAILABLE"
    reason = "group-loading"


class Unauthenticated(VaultError):
    status = "UNAUTHENTICATED"


class PermissionDenied(VaultError):
    status = "PERMISSION_DENIED"


class KeyStoreError(VaultError):
    """The key store is missing, unreadable, sealed with another passphrase or has wrong permissions."""

    status = "FAILED_PRECONDITION"


class IntegrityError(VaultError):
    """Stored data failed authentication (tampered, swapped or sealed under another key)."""

    status = "DATA_LOSS"
