"""Opaque pagination tokens.

Both adapters page by "last key returned" (a collection, face or user id), so a token is that key
wrapped in versioned, url-safe base64 JSON. Clients must treat it as opaque; the wrapping lets us
change the contents later and reject tokens from elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import json

from facebank.storage.errors import InvalidPaginationToken


def encode_token(kind: str, last_key: str) -> str:
    raw = json.dumps({"v": 1, "t": kind, "k": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(kind: str, token: str | None) -> str | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        obj = json.loads(raw)
        if obj["v"] == 1 and obj["t"] == kind and isinstance(obj["k"], str):
            return obj["k"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise InvalidPaginationToken(f"invalid pagination token for {kind}")


def check_max_results(max_results: int) -> int:
    if max_results < 1:
        raise ValueError("max_results must be >= 1")
    return max_results
