"""Rekognition's error classes.

Each exception carries the wire name botocore maps to ``client.exceptions.<Name>``
and the HTTP status Rekognition uses for it.
"""

from __future__ import annotations


class RekognitionError(Exception):
    """Base of every error the API returns on purpose."""

    code = "InternalServerError"
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _error(name: str, status: int = 400) -> type[RekognitionError]:
    return type(name, (RekognitionError,), {"code": name, "status": status})


# Model-constraint violations (length, range, pattern, enum, required). Rekognition, like other
# Coral services, reports them as ValidationException, which botocore raises as a ClientError.
ValidationException = _error("ValidationException")
InvalidParameterException = _error("InvalidParameterException")
InvalidImageFormatException = _error("InvalidImageFormatException")
ImageTooLargeException = _error("ImageTooLargeException")
InvalidS3ObjectException = _error("InvalidS3ObjectException")
ResourceNotFoundException = _error("ResourceNotFoundException")
ResourceAlreadyExistsException = _error("ResourceAlreadyExistsException")
ResourceInUseException = _error("ResourceInUseException")
ServiceQuotaExceededException = _error("ServiceQuotaExceededException")
ConflictException = _error("ConflictException")
IdempotentParameterMismatchException = _error("IdempotentParameterMismatchException")
InvalidPaginationTokenException = _error("InvalidPaginationTokenException")
AccessDeniedException = _error("AccessDeniedException")
ThrottlingException = _error("ThrottlingException")
InvalidSignatureException = _error("InvalidSignatureException", 403)
UnrecognizedClientException = _error("UnrecognizedClientException", 403)
MissingAuthenticationTokenException = _error("MissingAuthenticationTokenException", 403)
UnknownOperationException = _error("UnknownOperationException")
SerializationException = _error("SerializationException")
InternalServerError = _error("InternalServerError", 500)


def from_storage(exc: Exception) -> RekognitionError | None:
    """The Rekognition error a storage-layer exception means to a caller, or None (a bug: 500)."""
    from facebank import storage

    mapping = {
        storage.CollectionNotFound: lambda e: ResourceNotFoundException(
            f"The collection id: {e.collection_id} does not exist"
        ),
        storage.CollectionExists: lambda e: ResourceAlreadyExistsException(
            f"The collection id: {e.collection_id} already exists"
        ),
        storage.FaceNotFound: lambda e: InvalidParameterException(f"Face {e.face_id} does not exist"),
        storage.UserNotFound: lambda e: ResourceNotFoundException(f"User {e.user_id} does not exist"),
        storage.InvalidPaginationToken: lambda e: InvalidPaginationTokenException("Invalid pagination token"),
        # Contention outlasted the store's own retries; botocore retries ThrottlingException itself.
        storage.StorageBusy: lambda e: ThrottlingException("Too many concurrent writes; retry"),
    }
    for cls, make in mapping.items():
        if isinstance(exc, cls):
            return make(exc)
    return None
