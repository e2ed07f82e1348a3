"""Request validation against botocore's own Rekognition service model.

boto3 only checks Python types client-side; lengths, ranges, patterns, enums and required
members are the server's job. Rather than retyping the API, we walk the shapes of the
installed botocore model, decode base64 blobs on the way, and report violations the way
AWS does ("1 validation error detected: Value ... at 'image.bytes' failed to satisfy ...").
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import botocore.session
import regex  # Java-style \p{L} classes appear in Rekognition's patterns; stdlib re lacks them
from botocore.model import OperationModel, ServiceModel, Shape

from facebank.errors import (
    ImageTooLargeException,
    SerializationException,
    ValidationException,
)


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("rekognition")


@functools.cache
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)


def operation_model(name: str) -> OperationModel:
    return service_model().operation_model(name)


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "java.nio.HeapByteBuffer"  # AWS never echoes binary payloads
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


class _Walker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, value: Any, path: str, constraint: str) -> None:
        shown = "" if value is None else f" '{_show(value)}'"
        self.errors.append(f"Value{shown} at '{path}' failed to satisfy constraint: {constraint}")

    def walk(self, shape: Shape, value: Any, path: str) -> Any:
        """``value`` checked against ``shape`` (violations collected in self.errors), blobs decoded.
        A value of the wrong JSON type cannot be checked further: SerializationException, as AWS."""
        check = getattr(self, f"_{shape.type_name}", None)
        return value if check is None else check(shape, value, path)

    def _structure(self, shape: Shape, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SerializationException(f"Expected an object at '{path or 'request'}'")
        for name in shape.required_members:
            if value.get(name) is None:
                self.fail(None, _join(path, name), "Member must not be null")
        return {
            name: self.walk(member, value[name], _join(path, name))
            for name, member in shape.members.items()
            if value.get(name) is not None
        }

    def _list(self, shape: Shape, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise SerializationException(f"Expected a list at '{path}'")
        self._length(shape, value, path, "length")
        return [self.walk(shape.member, item, f"{path}.{i + 1}.member") for i, item in enumerate(value)]

    def _map(self, shape: Shape, value: Any, path: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise SerializationException(f"Expected a map at '{path}'")
        self._length(shape, value, path, "length")
        return {
            self.walk(shape.key, k, f"{path}.key"): self.walk(shape.value, v, f"{path}.{k}.member")
            for k, v in value.items()
        }

    def _string(self, shape: Shape, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise SerializationException(f"Expected a string at '{path}'")
        self._length(shape, value, path, "length")
        if "enum" in shape.metadata and value not in shape.enum:
            self.fail(value, path, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        pattern = shape.metadata.get("pattern")
        if pattern and not _compiled(pattern).fullmatch(value):
            self.fail(value, path, f"Member must satisfy regular expression pattern: {pattern}")
        return value

    def _integer(self, shape: Shape, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SerializationException(f"Expected an integer at '{path}'")
        self._range(shape, value, path)
        return value

    _long = _integer

    def _float(self, shape: Shape, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SerializationException(f"Expected a number at '{path}'")
        self._range(shape, value, path)
        return float(value)

    _double = _float

    def _boolean(self, shape: Shape, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise SerializationException(f"Expected a boolean at '{path}'")
        return value

    def _blob(self, shape: Shape, value: Any, path: str) -> bytes:
        if not isinstance(value, str):
            raise SerializationException(f"Expected base64 text at '{path}'")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SerializationException(f"Invalid base64 at '{path}'") from None
        if len(data) > shape.metadata.get("max", len(data)):
            # Rekognition answers an oversized image with its own error class, not a validation error.
            raise ImageTooLargeException(
                f"Image size {len(data)} bytes exceeds the limit of {shape.metadata['max']} bytes for "
                "Bytes; use S3Object for larger images"
            )
        self._length(shape, data, path, "length")
        return data

    def _timestamp(self, shape: Shape, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SerializationException(f"Expected epoch seconds at '{path}'")
        return value

    def _length(self, shape: Shape, value: Any, path: str, what: str) -> None:
        meta = shape.metadata
        if "min" in meta and len(value) < meta["min"]:
            self.fail(value, path, f"Member must have {what} greater than or equal to {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            self.fail(value, path, f"Member must have {what} less than or equal to {meta['max']}")

    def _range(self, shape: Shape, value: float, path: str) -> None:
        meta = shape.metadata
        if "min" in meta and value < meta["min"]:
            self.fail(value, path, f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            self.fail(value, path, f"Member must have value less than or equal to {meta['max']}")


def _join(path: str, member: str) -> str:
    return f"{path}.{_lower_camel(member)}" if path else _lower_camel(member)


def parse_request(operation: str, body: Any) -> dict[str, Any]:
    """Validate ``body`` against the operation's input shape; return it with blobs decoded."""
    shape = operation_model(operation).input_shape
    if shape is None:
        return {}
    walker = _Walker()
    parsed = walker.walk(shape, body, "")
    if walker.errors:
        n = len(walker.errors)
        noun = "error" if n == 1 else "errors"
        raise ValidationException(f"{n} validation {noun} detected: " + "; ".join(walker.errors))
    return parsed
