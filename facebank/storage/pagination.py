"""Opaque pagination tokens.

Both adapters page by "last key returned" (a collection, face or user id), so a token carries that
key and the listing it belongs to. It must fit botocore's PaginationToken (at most 255 characters)
while a collection id may itself be 255 characters, so the key is packed as a number in the ids'
own alphabet (~6.1 bits a character) and the bytes are written in base85 (6.4 bits a character):
a 255-character id gives a 249-character token. The listing ("collections", "faces/<collection>",
"users/<collection>") is kept as 4 bytes of its sha256, so a token from another listing or another
collection is refused rather than silently starting somewhere else.
"""

from __future__ import annotations

import base64
import hashlib

from facebank.storage.errors import InvalidPaginationToken

VERSION = 1
# Every character a collection id, user id or face id may hold (botocore's patterns), in order.
ALPHABET = "-.0123456789:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_BASE = len(ALPHABET) + 1  # bijective numbering: digit 0 is never used, so no key is lost
_DIGIT = {c: i + 1 for i, c in enumerate(ALPHABET)}


def _listing(kind: str) -> bytes:
    return hashlib.sha256(kind.encode()).digest()[:4]


def encode_token(kind: str, last_key: str) -> str:
    number = 0
    for c in last_key:
        number = number * _BASE + _DIGIT[c]  # KeyError: not an id the model allows
    packed = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.b85encode(bytes([VERSION]) + _listing(kind) + packed).decode()


def decode_token(kind: str, token: str | None) -> str | None:
    if token is None:
        return None
    try:
        raw = base64.b85decode(token)
    except ValueError:
        raw = b""
    if len(raw) < 6 or raw[0] != VERSION or raw[1:5] != _listing(kind):
        raise InvalidPaginationToken(f"invalid pagination token for {kind}")
    number, chars = int.from_bytes(raw[5:], "big"), []
    while number:
        number, digit = divmod(number, _BASE)
        if digit == 0:
            raise InvalidPaginationToken(f"invalid pagination token for {kind}")
        chars.append(ALPHABET[digit - 1])
    return "".join(reversed(chars))


def check_max_results(max_results: int) -> int:
    if max_results < 1:
        raise ValueError("max_results must be >= 1")
    return max_results
