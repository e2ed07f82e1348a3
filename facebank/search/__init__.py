"""Vector search over the storage ports: the search core, a layer above ``facebank.storage``.

* ``index.VectorIndex`` (faces) and ``users.UserVectorIndex`` (users' vectors): exact cosine search
  over a collection's immutable segments (``VectorStore``), filtered through the metadata store
  (a vector counts only while its record exists), with a segment cache and compaction;
* ``shards``: a collection as shards (the stored shard map, exact per-shard top rows and their
  merge), searched in this process or through a ``ShardSearcher`` (on AWS the shard functions,
  ``facebank.aws.shard_client``).

``FaceSearch`` below is the port the operations search faces through: what a database-side search
(pgvector, OpenSearch k-NN) would implement instead of ``VectorIndex``, built by the composition
root (``facebank.wiring``). The index classes need numpy, which a metadata-only function never
loads: they are imported on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from facebank.search.index import CompactionResult, VectorIndex
    from facebank.search.users import UserVectorIndex
    from facebank.storage.ports import FaceRecord


@runtime_checkable
class FaceSearch(Protocol):
    """Faces of a collection by vector: what IndexFaces, SearchFaces(ByImage), DeleteFaces and
    compaction need of a search backend. Scores are cosine similarities in [-1, 1]; a face counts
    only while its FaceRecord exists in the metadata store."""

    def add_faces(self, collection_id: str, faces: list[FaceRecord], vectors: np.ndarray) -> list[FaceRecord]:
        """Store the vectors, then the records (vectors first: a crash leaves no record without one)."""
        ...

    def search(self, collection_id: str, query: np.ndarray, k: int, min_score: float = -1.0) -> list[tuple[str, float]]:
        """The k best live face ids at or above min_score, best first."""
        ...

    def get_vector(self, collection_id: str, face_id: str) -> np.ndarray:
        """A stored face's vector (FaceNotFound when it is not live)."""
        ...

    def forget(self, collection_id: str) -> None:
        """Drop what this process caches of the collection (it was deleted or rewritten)."""
        ...


if TYPE_CHECKING:

    def _vector_index_is_a_face_search(index: VectorIndex) -> FaceSearch:
        return index  # checked by mypy: VectorIndex implements the port


_LAZY = {
    "CompactionResult": "facebank.search.index",
    "VectorIndex": "facebank.search.index",
    "UserVectorIndex": "facebank.search.users",
}

__all__ = ["CompactionResult", "FaceSearch", "UserVectorIndex", "VectorIndex"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
