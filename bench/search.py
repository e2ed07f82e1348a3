"""Collection search at scale, and IndexFaces throughput through the API.

    python bench/search.py                    # 10K, 100K, 1M faces; then IndexFaces on faces/dev
    python bench/search.py --sizes 10000 --no-index

Search: synthetic unit vectors (the pack's dimension) in one collection on the embedded store
(SQLite + segment files, 10K faces per segment as IndexFaces batches would compact to), searched
through facebank's VectorIndex exactly as SearchFacesByImage does (matmul over cached segments,
top-k, metadata liveness check). Reported per size: bulk load time, cold first search (segments
read from disk), warm search latency median and p99 with 1 and 2 BLAS threads, resident segment
memory. Peer in the same run: faiss IndexFlatIP (exact inner product, the usual baseline).

Sharding: a collection larger than one Lambda's memory (10 GB ~ 20M x 128-d float32) is split into
shards of segments; each shard is searched by its own invocation and the per-shard top-k lists
are merged. The bench splits the largest collection into 4 shards, searches each separately,
merges, checks the merge equals the unsharded answer, and prints per-shard and merge times.

IndexFaces: a `facebank serve` subprocess on a fresh data dir; every faces/dev image indexed
through boto3 with 1, 2 and 4 client threads; images/s.
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, dev_images, shared_dir
from threadpoolctl import threadpool_limits

from facebank.engine.packs import pack
from facebank.settings import Settings
from facebank.storage import CollectionRecord, FaceRecord, VectorIndex, open_embedded

SEGMENT = 10_000
QUERIES = 200
K = 10


def _ms(seconds: float) -> float:
    return seconds * 1000


def _summary(times: list[float]) -> str:
    return f"median {statistics.median(times):7.2f} ms  p99 {np.percentile(times, 99):7.2f} ms"


def _faces(ids: list[str]) -> list[FaceRecord]:
    box = {"Width": 0.2, "Height": 0.3, "Left": 0.4, "Top": 0.3}
    return [FaceRecord(i, "img", None, box, 99.0, "bench", None, "", 0.0) for i in ids]


def build(data_dir: Path, n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    storage = open_embedded(data_dir)
    metadata, vectors = storage.metadata, storage.vectors
    metadata.create_collection(CollectionRecord("bench", "arn", "bench", "bench", time.time()))
    index = VectorIndex(vectors, metadata)
    everything = []
    for start in range(0, n, SEGMENT):
        count = min(SEGMENT, n - start)
        v = rng.standard_normal((count, dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        index.add_faces("bench", _faces([f"face-{start + i:08d}" for i in range(count)]), v)
        everything.append(v)
    return np.concatenate(everything)


def queries(gallery: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Probes near gallery faces (a re-photographed person), so top-k is not pure noise.
    picks = gallery[rng.integers(0, len(gallery), QUERIES)]
    q = picks + 0.9 * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(picks.shape[1])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def time_searches(search, qs: np.ndarray) -> list[float]:
    times = []
    for q in qs:
        start = time.perf_counter()
        search(q)
        times.append(_ms(time.perf_counter() - start))
    return times


def bench_size(n: int, dim: int, workdir: Path) -> None:
    rng = np.random.default_rng(n)
    data_dir = workdir / f"n{n}"
    start = time.perf_counter()
    gallery = build(data_dir, n, dim, rng)
    load_s = time.perf_counter() - start
    qs = queries(gallery, rng)

    storage = open_embedded(data_dir)  # a fresh process's view: nothing cached
    metadata, vectors = storage.metadata, storage.vectors
    index = VectorIndex(vectors, metadata)
    start = time.perf_counter()
    index.search("bench", qs[0], K)
    cold = _ms(time.perf_counter() - start)
    print(
        f"\n{n:>9,} faces x {dim}-d: bulk load {load_s:6.1f} s; cold first search {cold:8.1f} ms; "
        f"segments in memory {index.cache.nbytes / 2**20:7.1f} MiB"
    )

    import faiss

    flat = faiss.IndexFlatIP(dim)
    flat.add(gallery)
    for threads in (1, 2):
        with threadpool_limits(threads):
            faiss.omp_set_num_threads(threads)
            ours = time_searches(lambda q: index.search("bench", q, K), qs)
            peer = time_searches(lambda q: flat.search(q[None, :], K), qs)
        print(f"  {threads} thread(s): facebank {_summary(ours)}   |   faiss IndexFlatIP {_summary(peer)}")
    # Same answers as the exact peer (ties aside): the index is exact, not approximate.
    agree = 0
    for q in qs[:20]:
        ours = [f for f, _ in index.search("bench", q, K)]
        _, rows = flat.search(q[None, :], K)
        agree += ours == [f"face-{r:08d}" for r in rows[0]]
    print(f"  top-{K} identical to faiss on {agree}/20 queries")
    return index


def bench_shards(index: VectorIndex, n: int, dim: int, shards: int = 4) -> None:
    """Search shards of the collection separately (as separate Lambda invocations would), merge."""
    names = index.vectors.list_segments("bench")
    groups = [names[i::shards] for i in range(shards)]
    rng = np.random.default_rng(7)
    q = rng.standard_normal(dim).astype(np.float32)
    q /= np.linalg.norm(q)
    with threadpool_limits(1):
        per_shard, partials = [], []
        for group in groups:
            start = time.perf_counter()
            scored = []
            for name in group:
                seg = index._load("bench", name)  # a shard worker loads only its own segments
                s = seg.vectors @ q
                top = np.argpartition(-s, K)[:K]
                scored += [(float(s[t]), str(seg.ids[t])) for t in top]
            partials.append(heapq.nlargest(K, scored))
            per_shard.append(_ms(time.perf_counter() - start))
        start = time.perf_counter()
        merged = [f for _, f in heapq.nlargest(K, (p for part in partials for p in part))]
        merge_ms = _ms(time.perf_counter() - start)
    whole = [f for f, _ in index.search("bench", q, K)]
    print(
        f"  sharded x{shards}: per-shard {', '.join(f'{t:.1f}' for t in per_shard)} ms "
        f"(parallel wall ~{max(per_shard):.1f} ms), merge {merge_ms:.3f} ms, "
        f"equals unsharded top-{K}: {merged == whole}"
    )


def bench_index_faces(workdir: Path) -> None:
    import boto3

    sys.path.insert(0, str(ROOT / "tests"))
    from support import Server

    env = {**os.environ, "FACEBANK_MODEL_MIRROR": os.environ.get("FACEBANK_MODEL_MIRROR", str(shared_dir() / "models"))}
    server = Server(env, workdir / "serve-data")
    try:
        client = server.client()
        client.create_collection(CollectionId="dev")
        images = [(p.read_bytes(), f"{ident}-{p.stem}") for p, ident in dev_images()]
        client.index_faces(CollectionId="dev", Image={"Bytes": images[0][0]}, ExternalImageId="warm")

        def index(item):
            data, name = item
            return client.index_faces(CollectionId="dev", Image={"Bytes": data}, ExternalImageId=name)

        # The server answers each request on its own thread (onnxruntime releases the GIL); more
        # client threads than cores keep both cores busy while some requests are in botocore.
        for threads in (1, 2, 4):
            client.delete_collection(CollectionId="dev")
            client.create_collection(CollectionId="dev")
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(index, images))
            elapsed = time.perf_counter() - start
            faces = sum(len(r["FaceRecords"]) for r in results)
            print(
                f"IndexFaces via boto3, {threads} client thread(s): {len(images)} images "
                f"({faces} faces) in {elapsed:.1f} s = {len(images) / elapsed:.1f} images/s"
            )
    finally:
        server.stop()
    del boto3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--no-index", action="store_true", help="skip the IndexFaces throughput run")
    args = parser.parse_args()
    chosen = pack(Settings.from_env().pack)
    dim = chosen.dimension
    print(f"pack {chosen.name}, {os.cpu_count()} CPUs, {QUERIES} queries per setting, top-{K}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        index = None
        for n in args.sizes:
            index = bench_size(n, dim, workdir)
        if index is not None:
            bench_shards(index, args.sizes[-1], dim)
        if not args.no_index:
            bench_index_faces(workdir)


if __name__ == "__main__":
    main()
