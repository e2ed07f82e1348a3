"""Rekognition's error classes, one declared class per error code.

Each carries the wire name botocore maps to ``client.exceptions.<Name>`` (the class name) and the
HTTP status Rekognition uses for it. This module imports nothing of facebank: every layer may
raise these; the protocol renders them (and maps storage errors to them: facebank.protocol).
"""

from __future__ import annotations

from typing import ClassVar


class RekognitionError(Exception):
    """Base of every error the API returns on purpose."""

    code: ClassVar[str] = "InternalServerError"
    status: ClassVar[int] = 400

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.__name__  # the wire name is the class name, as in botocore's model

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ValidationException(RekognitionError):
    """A model constraint (length, range, pattern, enum, required) is broken; botocore raises it as a ClientError."""


class InvalidParameterException(RekognitionError):
    """An input parameter violated a constraint the model cannot express."""


class InvalidImageFormatException(RekognitionError):
    """The image is not a JPEG or PNG that can be decoded."""


class ImageTooLargeException(RekognitionError):
    """The image is over the size the operation accepts."""


class InvalidS3ObjectException(RekognitionError):
    """The S3 object could not be read (missing bucket, key or version, or no access)."""


class ResourceNotFoundException(RekognitionError):
    """The collection, user or other resource does not exist."""


class ResourceAlreadyExistsException(RekognitionError):
    """A collection with this id already exists."""


class ResourceInUseException(RekognitionError):
    """The resource is in use by another request."""


class ServiceQuotaExceededException(RekognitionError):
    """A quota (faces per collection, faces per user) would be exceeded."""


class ConflictException(RekognitionError):
    """The request conflicts with the resource's current state (a face of another user)."""


class IdempotentParameterMismatchException(RekognitionError):
    """A ClientRequestToken was reused with other parameters."""


class InvalidPaginationTokenException(RekognitionError):
    """The NextToken is malformed or belongs to another listing."""


class AccessDeniedException(RekognitionError):
    """The caller may not perform the action."""


class ThrottlingException(RekognitionError):
    """Contention or a busy dependency: retry (botocore retries it itself)."""


class InvalidSignatureException(RekognitionError):
    """The request's SigV4 signature does not match."""

    status = 403


class UnrecognizedClientException(RekognitionError):
    """The access key id is not known."""

    status = 403


class MissingAuthenticationTokenException(RekognitionError):
    """The request is not signed."""

    status = 403


class UnknownOperationException(RekognitionError):
    """X-Amz-Target names no operation of this API."""


class SerializationException(RekognitionError):
    """The body is not valid JSON (or holds NaN or Infinity)."""


class InternalServerError(RekognitionError):
    """A bug or an unexpected failure; the caller sees no details."""

    status = 500


class VideoTooLargeException(RekognitionError):
    """The stored video is over Rekognition Video's size limit."""


class LimitExceededException(RekognitionError):
    """Too many concurrent jobs (stored-video jobs in progress) for this deployment."""
