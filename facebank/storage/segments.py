"""Segment naming and the byte format shared by the file and S3 vector stores.

Format (little-endian), version 1:
    magic   8 bytes  b"FBSEG\\x00\\x01\\x00"
    header  16 bytes n (u32), d (u32), ids_len (u32), crc32 (u32) of everything after the header
    ids     ids_len bytes: the n face ids, UTF-8, joined by "\\n"
    matrix  n*d float32
The checksum catches torn or truncated objects, which an atomic rename/PUT should already
prevent, but a copied or hand-edited data_dir might not.
"""

from __future__ import annotations

import io
import re
import struct
import time
import uuid
import zlib
from typing import TYPE_CHECKING

from facebank.storage.errors import CorruptSegment

if TYPE_CHECKING:  # numpy loads with the first segment encoded or decoded
    import numpy as np

MAGIC = b"FBSEG\x00\x01\x00"
_HEADER = struct.Struct("<IIII")
SUFFIX = ".seg"

# Names must be safe as file names and S3 keys; a leading "." is reserved for temp files.
_NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def new_segment_name() -> str:
    """A unique name that sorts in creation order (nanosecond clock + random suffix)."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def segment_time(name: str) -> float | None:
    """Creation time (epoch s) encoded by new_segment_name, or None for foreign names."""
    head = name.split("-", 1)[0]
    return int(head) / 1e9 if head.isdigit() and len(head) == 20 else None


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid segment name {name!r}")
    return name


def safe_component(collection_id: str) -> str:
    """Collection ids match [a-zA-Z0-9_.-]+, so "." and ".." are legal ids but not safe
    directory names. '%' cannot occur in an id, so prefixing it to ids that start with '.' is
    collision-free."""
    if not collection_id or "/" in collection_id or "\\" in collection_id:
        raise ValueError(f"invalid collection id {collection_id!r}")
    return "%" + collection_id if collection_id.startswith(".") else collection_id


def _check_inputs(face_ids: list[str], vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or vectors.shape[0] != len(face_ids) or vectors.shape[1] == 0:
        raise ValueError(f"vectors shape {vectors.shape} does not match {len(face_ids)} face ids")
    if not face_ids:
        raise ValueError("a segment needs at least one face")
    for fid in face_ids:
        if not fid or "\n" in fid:
            raise ValueError(f"invalid face id {fid!r}")
    return vectors


def encode(face_ids: list[str], vectors: np.ndarray) -> bytes:
    vectors = _check_inputs(face_ids, vectors)
    ids = "\n".join(face_ids).encode("utf-8")
    body = ids + vectors.tobytes()
    header = _HEADER.pack(vectors.shape[0], vectors.shape[1], len(ids), zlib.crc32(body))
    return MAGIC + header + body


def decode(data: bytes) -> tuple[list[str], np.ndarray]:
    import numpy as np

    start = len(MAGIC) + _HEADER.size
    if len(data) < start or data[: len(MAGIC)] != MAGIC:
        raise CorruptSegment("bad magic")
    n, d, ids_len, crc = _HEADER.unpack_from(data, len(MAGIC))
    body = memoryview(data)[start:]
    if len(body) != ids_len + 4 * n * d:
        raise CorruptSegment(f"size mismatch: {len(body)} bytes for n={n} d={d}")
    if zlib.crc32(body) != crc:
        raise CorruptSegment("checksum mismatch")
    face_ids = bytes(body[:ids_len]).decode("utf-8").split("\n")
    if len(face_ids) != n:
        raise CorruptSegment("face id count mismatch")
    # Copied as bytes into an aligned array: the matrix starts after the ids, at any offset, and
    # numpy's element-wise cast from an unaligned buffer is several times slower than a memcpy.
    vectors = np.empty((n, d), dtype="<f4")
    vectors.reshape(-1).view(np.uint8)[:] = np.frombuffer(body, dtype=np.uint8, offset=ids_len)
    return face_ids, vectors.astype(np.float32, copy=False)


def read(stream: io.BufferedIOBase) -> tuple[list[str], np.ndarray]:
    """decode() reading from a file: the matrix goes straight from the file into its (aligned)
    array, so loading a shard-sized segment holds one copy of it, not the file's bytes as well."""
    import numpy as np

    head = stream.read(len(MAGIC) + _HEADER.size)
    if len(head) < len(MAGIC) + _HEADER.size or head[: len(MAGIC)] != MAGIC:
        raise CorruptSegment("bad magic")
    n, d, ids_len, crc = _HEADER.unpack_from(head, len(MAGIC))
    ids = stream.read(ids_len)
    vectors = np.empty((n, d), dtype="<f4")
    view = vectors.data.cast("B")
    filled = 0
    while filled < len(view) and len(ids) == ids_len:
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    if len(ids) != ids_len or filled != len(view) or stream.read(1):
        raise CorruptSegment(f"size mismatch for n={n} d={d}")
    if zlib.crc32(view, zlib.crc32(ids)) != crc:
        raise CorruptSegment("checksum mismatch")
    face_ids = ids.decode("utf-8").split("\n")
    if len(face_ids) != n:
        raise CorruptSegment("face id count mismatch")
    return face_ids, vectors.astype(np.float32, copy=False)
