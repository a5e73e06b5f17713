"""Every error the vault raises on purpose, and the gRPC status each one maps to.

Messages are shown to callers and written to logs, so they must never contain biometric data,
key material or internal paths: they say what was wrong with the request and what to do.
"""

from __future__ import annotations

import grpc


class VaultError(Exception):
    """Base class. `status` is the gRPC status code the service answers with."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(VaultError):
    """The request is malformed: missing field, bad id, unsupported modality."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class InvalidSample(InvalidArgument):
    """A sample cannot be decoded: corrupt, empty, wrong format, too large in pixels."""


class PoorSample(VaultError):
    """A sample decodes but carries too little biometric signal (no face, too few minutiae)."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class FailedPrecondition(VaultError):
    """The request is valid but the vault's state does not allow it (e.g. template revoked)."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(VaultError):
    """Unknown template or subject. Another tenant's ids are reported exactly like unknown ones."""

    status = grpc.StatusCode.NOT_FOUND


class Overloaded(VaultError):
    """The extraction queue is full; the caller should back off and retry."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(VaultError):
    status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(VaultError):
    status = grpc.StatusCode.PERMISSION_DENIED


class KeyStoreError(VaultError):
    """The key store is missing, unreadable, sealed with another passphrase or has wrong permissions."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class IntegrityError(VaultError):
    """Stored data failed authentication (tampered, swapped or sealed under another key)."""

    status = grpc.StatusCode.DATA_LOSS
