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
from facebank.search import VectorIndex
from facebank.settings import Settings
from facebank.storage import CollectionRecord, FaceRecord, open_embedded

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


def bench_size(n: int, dim: int, workdir: Path) -> tuple[VectorIndex, np.ndarray]:
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
    return index, gallery


def _brute_force(gallery: np.ndarray, q: np.ndarray, k: int) -> list[str]:
    scores = gallery @ q
    top = np.argpartition(-scores, k)[: k + 8]
    return [f"face-{r:08d}" for r in sorted(top.tolist(), key=lambda r: (-scores[r], r))[:k]]


def _f16_scores(v16: np.ndarray, q: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Scores of float16 rows: numpy has no float16 BLAS, so rows are widened chunk by chunk."""
    out = np.empty(len(v16), dtype=np.float32)
    for i in range(0, len(v16), chunk):
        out[i : i + chunk] = v16[i : i + chunk].astype(np.float32) @ q
    return out


def bench_exact_shards(index: VectorIndex, gallery: np.ndarray, shard_rows: int = 250_000) -> None:
    """The largest collection compacted into shards of shard_rows and searched through them
    (facebank's own assignment and merge, in this process as `facebank serve` does) against an
    exact unsharded search of the whole gallery in one matrix; float16 storage the same way."""
    index.shard_rows = shard_rows
    index._clock = lambda: time.time() + 3600  # every segment old enough to compact
    index.compact("bench", min_age_s=0)
    plan = index.shard_layout("bench")
    rng = np.random.default_rng(20)
    qs = queries(gallery, rng)[:20]
    same = sum([f for f, _ in index.search("bench", q, K)] == _brute_force(gallery, q, K) for q in qs)
    print(f"  {len(plan)} shards of <= {shard_rows:,}: top-{K} identical to the unsharded exact search on {same}/20")
    g16 = gallery.astype(np.float16)
    same16 = same_rescored = 0
    for q in qs:
        exact = _brute_force(gallery, q, K)
        s16 = _f16_scores(g16, q)
        top16 = sorted(np.argpartition(-s16, K)[:K].tolist(), key=lambda r: (-s16[r], r))
        same16 += [f"face-{r:08d}" for r in top16] == exact
        cand = np.argpartition(-s16, 4 * K)[: 4 * K]
        rescored = gallery[cand] @ q
        best = sorted(zip(cand.tolist(), rescored.tolist(), strict=True), key=lambda p: (-p[1], p[0]))[:K]
        same_rescored += [f"face-{r:08d}" for r, _ in best] == exact
    print(f"  float16 rows: top-{K} identical on {same16}/20; with float32 re-scoring of the best {4 * K}: "
          f"{same_rescored}/20")  # fmt: skip


# --- 20M faces, one process per shard (as one Lambda invocation per shard would be)

SHARD_QUERIES = 20
PLANTED = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)  # cosines of each query's planted neighbours

# Modelled AWS latencies (ms). ASSUMPTIONS, not measurements: warm API Gateway REST overhead; the
# search function's reads before the fan-out (collection GetItem, shard-map GetItem, segment LIST:
# bench/cost.py's LATENCY_MS of 6 ms per DynamoDB and 20 ms per S3 request); one synchronous
# Lambda invoke's round trip to a warm environment; the merged candidates' BatchGetItem.
API_GATEWAY_MS = 10.0
BEFORE_FAN_OUT_MS = 6.0 + 6.0 + 20.0
INVOKE_MS = 20.0
METADATA_AFTER_MS = 6.0
# ASSUMPTION: S3 throughput of one GetObject stream into a Lambda function. AWS documents no
# Lambda network bandwidth figure; its S3 performance guidelines ("Best practices design patterns:
# optimizing Amazon S3 performance") say to scale throughput with parallel connections and
# byte-range GETs of 8-16 MB. 90 MB/s per stream is the figure we assume for one stream; the shard
# loader reads a segment in one GET today.
S3_STREAM_MB_S = 90.0
# us-east-1 list prices, arm64 (bench/cost.py's Lambda price; provisioned concurrency's two prices).
PC_GB_S = 0.0000033334  # provisioned concurrency, per GB-second kept warm
PC_DURATION_GB_S = 0.0000108333 * 0.8  # duration on provisioned environments (arm64: 20 % below x86)
SECONDS_A_MONTH = 730 * 3600


def shard_worker(root: str, name: str, shard: int, queries_file: str, out_file: str, want: int) -> None:
    """One shard's process: cold load of its segment file, then the queries; JSON to out_file."""
    import json

    from facebank.search.shards import ShardQuery, top_rows
    from facebank.storage.files import FileVectorStore, collection_dir

    path = Path(root) / collection_dir("bench") / f"{name}.seg"
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache: a read from the disk
    os.close(fd)
    qs = np.load(queries_file)
    index = VectorIndex(FileVectorStore(root), None)  # type: ignore[arg-type] # a shard needs no metadata
    with threadpool_limits(1):  # a 2 GB Lambda has ~1.2 vCPU
        start = time.perf_counter()
        seg = index._load("bench", name)
        load_s = time.perf_counter() - start
        rss = _status_mb("VmRSS")
        times, answers = [], []
        for q in qs:
            start = time.perf_counter()
            a = index.search_shard(ShardQuery("bench", "faces", shard, (name,), q, want, -1.0))
            times.append(_ms(time.perf_counter() - start))
            answers.append((a.rows, a.scores))
        v16 = seg.vectors.astype(np.float16)
        times16 = []
        for q in qs[:3]:  # float16's own query time: numpy has no float16 BLAS
            start = time.perf_counter()
            top_rows(lambda r: seg.ids[r].tolist(), _f16_scores(v16, q), want, -1.0)
            times16.append(_ms(time.perf_counter() - start))
        # Answers for every query: the rows widened once for all of them.
        s16_all = np.empty((len(v16), len(qs)), dtype=np.float32)
        for i in range(0, len(v16), 65_536):
            s16_all[i : i + 65_536] = v16[i : i + 65_536].astype(np.float32) @ qs.T
        answers16, rescored = [], []
        for j, q in enumerate(qs):
            s16 = np.ascontiguousarray(s16_all[:, j])
            a = top_rows(lambda r: seg.ids[r].tolist(), s16, want, -1.0)
            answers16.append((a.rows, a.scores))
            wide = np.argpartition(-s16, 4 * want)[: 4 * want]
            exact = seg.vectors[wide] @ q
            best = sorted(zip(seg.ids[wide].tolist(), exact.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
            rescored.append(([r for r, _ in best[:want]], [s for _, s in best[:want]]))
    out = {
        "rows": len(seg.ids),
        "file_mb": path.stat().st_size / 2**20,
        "load_s": load_s,
        "rss_mb": rss,
        "peak_mb": _status_mb("VmHWM"),
        "cached_mb": index.cache.nbytes / 2**20,
        "f16_mb": (v16.nbytes + seg.ids.nbytes) / 2**20,
        "query_ms": times,
        "query16_ms": times16,
        "answers": answers,
        "answers16": answers16,
        "rescored16": rescored,
    }
    Path(out_file).write_text(json.dumps(out))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _planted_shard(dim: int, shard: int, rows: int, qs: np.ndarray, plants: list[tuple[int, int, float]]):
    rng = np.random.default_rng(1000 + shard)
    v = rng.standard_normal((rows, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for row, j, cosine in plants:  # a near neighbour of query j at this cosine
        noise = rng.standard_normal(dim).astype(np.float32)
        noise -= (noise @ qs[j]) * qs[j]
        noise /= np.linalg.norm(noise)
        v[row] = cosine * qs[j] + np.sqrt(1 - cosine**2) * noise
    ids = [f"{shard:08x}-0000-4000-8000-{r:012x}" for r in range(rows)]
    return ids, v


def bench_sharded(total: int, shard_rows: int, dim: int, workdir: Path, parallel: int = 2) -> None:
    """A total x dim collection in shards of shard_rows, generated one shard file at a time (no
    process ever holds more than one shard), each searched in its own process (at most `parallel`
    at once, no generation meanwhile); answers merged with facebank's merge."""
    import json
    import shutil
    import subprocess

    from facebank.search.shards import ShardAnswer, merge
    from facebank.storage.files import FileVectorStore

    n_shards = -(-total // shard_rows)
    want = max(K + 8, int(K * 1.5))  # what VectorIndex asks each shard for
    rng = np.random.default_rng(2026)
    qs = rng.standard_normal((SHARD_QUERIES, dim), dtype=np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    plants: dict[int, list[tuple[int, int, float]]] = {}
    for j in range(SHARD_QUERIES):
        for m, cosine in enumerate(PLANTED):  # spread over shards, so the merge matters
            shard = (j * 7 + m) % n_shards
            plants.setdefault(shard, []).append((int(rng.integers(shard_rows)), j, cosine))
    root = workdir / "vectors"
    store = FileVectorStore(root)
    np.save(workdir / "queries.npy", qs)
    results: list[dict] = []
    print(f"\n{total:,} faces x {dim}-d in {n_shards} shards of {shard_rows:,}, one process per shard "
          f"({parallel} at a time, 1 BLAS thread each, no generation meanwhile), {SHARD_QUERIES} queries")  # fmt: skip
    gen_s = 0.0
    for first in range(0, n_shards, parallel):
        batch = []
        for shard in range(first, min(first + parallel, n_shards)):
            rows = min(shard_rows, total - shard * shard_rows)
            start = time.perf_counter()
            ids, v = _planted_shard(dim, shard, rows, qs, plants.get(shard, []))
            name = f"{shard:020d}-shard"
            store.write_segment("bench", name, ids, v)
            del ids, v
            gen_s += time.perf_counter() - start
            batch.append((shard, name, workdir / f"shard-{shard}.json"))
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--shard-worker",
                    str(root),
                    name,
                    str(shard),
                    str(workdir / "queries.npy"),
                    str(out),
                    str(want),
                ]
            )  # fmt: skip
            for shard, name, out in batch
        ]
        for proc, (shard, name, out) in zip(procs, batch, strict=True):
            if proc.wait() != 0:
                raise RuntimeError(f"shard worker {shard} failed")
            results.append(json.loads(out.read_text()))
            store.delete_segment("bench", name)  # the disk holds at most `parallel` shard files
            out.unlink()
    shutil.rmtree(root, ignore_errors=True)

    loads = [r["load_s"] for r in results]
    per_query = np.array([r["query_ms"] for r in results])  # [shard, query]
    per_query16 = np.array([r["query16_ms"] for r in results])
    merge_ms, tops, tops16, tops_rescored = [], [], [], []
    for j in range(SHARD_QUERIES):
        answers = [ShardAnswer(*r["answers"][j], complete=False) for r in results]
        start = time.perf_counter()
        merged = merge(answers, want)
        merge_ms.append(_ms(time.perf_counter() - start))
        tops.append(merged.rows[:K])
        tops16.append(merge([ShardAnswer(*r["answers16"][j]) for r in results], want).rows[:K])
        tops_rescored.append(merge([ShardAnswer(*r["rescored16"][j]) for r in results], want).rows[:K])
    found = sum(
        sum(1 for row in top if any(int(row[-12:], 16) == r and int(row[:8], 16) == s
                                    for s, ps in plants.items() for r, jj, _ in ps if jj == j))
        for j, top in enumerate(tops)
    )  # fmt: skip
    slowest = per_query.max(axis=0)  # the fan-out waits for its slowest shard
    fixed = API_GATEWAY_MS + BEFORE_FAN_OUT_MS + INVOKE_MS + METADATA_AFTER_MS
    e2e = fixed + slowest + np.array(merge_ms)
    file_mb = float(np.mean([r["file_mb"] for r in results]))
    s3_load = file_mb / S3_STREAM_MB_S
    print(f"  generation {gen_s:.0f} s; shard file {file_mb:.0f} MiB; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (shared machine)")  # fmt: skip
    print("  | per shard | median | p99 / max |")
    print("  |---|---|---|")
    print(f"  | cold load from a local file (page cache dropped) | {np.median(loads):.2f} s | {max(loads):.2f} s |")
    print(f"  | modelled cold load from S3 at {S3_STREAM_MB_S:.0f} MB/s (assumed) | {s3_load:.2f} s | - |")
    print(f"  | query, float32 (1 thread) | {np.median(per_query):.1f} ms | {per_query.max():.1f} ms |")
    print(f"  | query, float16 rows widened per chunk (3 queries) | {np.median(per_query16):.1f} ms | "
          f"{per_query16.max():.1f} ms |")  # fmt: skip
    print(f"  | memory: resident after load | {np.median([r['rss_mb'] for r in results]):.0f} MiB | "
          f"peak {max(r['peak_mb'] for r in results):.0f} MiB |")  # fmt: skip
    print(f"  | memory: cached segment (float32 + ids) | {np.median([r['cached_mb'] for r in results]):.0f} MiB | "
          f"float16 + ids {np.median([r['f16_mb'] for r in results]):.0f} MiB |")  # fmt: skip
    print(f"  | merge of {n_shards} answers of {want} rows | {np.median(merge_ms):.2f} ms | {max(merge_ms):.2f} ms |")
    print(f"  | modelled warm search end to end ({n_shards} shards in parallel) | {np.median(e2e):.0f} ms | "
          f"{e2e.max():.0f} ms |")  # fmt: skip
    steady = fixed + np.median(per_query, axis=1).max() + np.median(merge_ms)
    print(f"  | modelled warm search, each shard at its median query time (this machine's noise aside) | "
          f"{steady:.0f} ms | - |")  # fmt: skip
    print(f"  | modelled cold search (+ slowest shard load from S3) | {np.median(e2e) + s3_load * 1000:.0f} ms | - |")
    print(
        f"  modelled fixed part {fixed:.0f} ms (API Gateway {API_GATEWAY_MS:.0f}, reads before the fan-out "
        f"{BEFORE_FAN_OUT_MS:.0f}, invoke {INVOKE_MS:.0f}, candidates' metadata {METADATA_AFTER_MS:.0f}: assumed)"
    )
    print(f"  planted neighbours in the merged top-{K}: {found}/{SHARD_QUERIES * len(PLANTED)}")
    same16 = sum(a == b for a, b in zip(tops16, tops, strict=True))
    same_rescored = sum(a == b for a, b in zip(tops_rescored, tops, strict=True))
    print(
        f"  float16: merged top-{K} identical to float32 on {same16}/{SHARD_QUERIES}; with float32 "
        f"re-scoring of each shard's best {4 * want}: {same_rescored}/{SHARD_QUERIES}"
    )
    print_costs(n_shards, float(np.median(per_query)), s3_load)


def print_costs(n_shards: int, query_ms: float, s3_load_s: float, memory_gb: float = 2.0) -> None:
    """Monthly cost of the shard functions: kept warm with provisioned concurrency, or cold."""
    from cost import PRICES

    warm_fixed = n_shards * memory_gb * SECONDS_A_MONTH * PC_GB_S
    warm_per_search = n_shards * (
        (query_ms + INVOKE_MS) / 1000 * memory_gb * PC_DURATION_GB_S + PRICES["lambda_request"]
    )
    cold_per_search = n_shards * (
        (s3_load_s + query_ms / 1000) * memory_gb * PRICES["lambda_gb_s_arm64"]
        + PRICES["lambda_request"]
        + PRICES["s3_get"]
    )
    print(f"  monthly cost of the {n_shards} shard functions ({memory_gb:.0f} GB, arm64, us-east-1 list prices; "
          "the search function itself is the same either way):")  # fmt: skip
    print("  | searches a month | warm (provisioned concurrency 1 each) | cold (every search loads from S3) |")
    print("  |---|---|---|")
    for searches in (10_000, 100_000, 1_000_000, 10_000_000):
        warm = warm_fixed + searches * warm_per_search
        cold = searches * cold_per_search
        print(f"  | {searches:,} | ${warm:,.0f} | ${cold:,.0f} |")


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
    if len(sys.argv) > 1 and sys.argv[1] == "--shard-worker":
        root, name, shard, queries_file, out_file, want = sys.argv[2:8]
        shard_worker(root, name, int(shard), queries_file, out_file, int(want))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--no-index", action="store_true", help="skip the IndexFaces throughput run")
    parser.add_argument("--shards-total", type=int, default=20_000_000, help="the sharded collection (0: skip)")
    parser.add_argument("--shard-rows", type=int, default=Settings().shard_rows)
    parser.add_argument("--shard-dir", type=Path, default=None, help="where shard files go (default: a temp dir)")
    args = parser.parse_args()
    chosen = pack(Settings.from_env().pack)
    dim = chosen.dimension
    print(f"pack {chosen.name}, {os.cpu_count()} CPUs, {QUERIES} queries per setting, top-{K}")
    with tempfile.TemporaryDirectory(dir=args.shard_dir) as tmp:
        workdir = Path(tmp)
        index, gallery = None, None
        for n in args.sizes:
            index, gallery = bench_size(n, dim, workdir)
        if index is not None and gallery is not None:
            bench_exact_shards(index, gallery)
            del index, gallery
        if args.shards_total:
            bench_sharded(args.shards_total, args.shard_rows, dim, workdir)
        if not args.no_index:
            bench_index_faces(workdir)


if __name__ == "__main__":
    main()
