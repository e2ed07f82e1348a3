"""Embed every photo of shared/faces/lfw (and faces/dev) once, for every pack, and keep the result.

    python bench/lfw_vectors.py [--set lfw|dev] [--cache-dir /work/cache/a2-calib] [--limit N]

One pass serves all three packs: they share the detector (YuNet), and a pack's vector is a fixed
function of its recognisers' raw outputs (``pack_vectors``), so each photo is decoded, detected and
run through dlib's ResNet and MobileFaceNet once. Kept per photo, for the face the API takes
(``engine.detect``'s first face: SearchFacesByImage, CompareFaces' source, a celebrity photo) and,
when another, the face nearest the image centre (LFW's labelled face): each recogniser's two raw
outputs (the face and its mirror image, so flip test-time augmentation can be judged from the
cache), the face's box, detection confidence, Sharpness and Brightness, and how many faces the
photo holds. The cache (an npz file per set) is written every ``--checkpoint`` photos and a rerun
resumes where it stopped; it is tied to the commit of ``facebank/engine`` it was made with
(``pipeline_key``), and a cache of another pipeline is recomputed, not reused.

Used by bench/calibrate.py and bench/search_accuracy.py (bench/gallery.py, users.py and celebrities.py
are the faces/dev benches of before issue 21).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("FACEBANK_BENCH_CACHE", "/tmp/facebank-bench"))
RECOGNIZERS = ("dlib-resnet", "mobilefacenet")
DIMENSION = 128


def shared_dir() -> Path:
    return Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared"))


# engine modules a face's vector does not depend on (calibration, attributes, video, fetch-time code)
NOT_VECTORS = {"packs.py", "attributes.py", "faceapi.py", "mesh.py", "iris.py", "persons.py", "tracker.py", "video.py"}


def pipeline_key() -> str:
    """What the vectors depend on: the source of the engine's decode-detect-align-embed modules."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "facebank" / "engine").glob("*.py")):
        if path.name not in NOT_VECTORS and not path.name.endswith("_convert.py"):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def lfw_images() -> list[tuple[str, str]]:
    """(path relative to faces/, identity) for every LFW photo, by identity then photo number."""
    lfw = shared_dir() / "faces" / "lfw"
    out = []
    for person in sorted(p for p in lfw.iterdir() if p.is_dir()):
        out += [(f"lfw/{person.name}/{photo.name}", person.name) for photo in sorted(person.glob("*.jpg"))]
    return out


def dev_images() -> list[tuple[str, str]]:
    with open(shared_dir() / "faces" / "MANIFEST.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("dev/")]
    return sorted((r["path"], r["identity"]) for r in rows)


SETS = {"lfw": lfw_images, "dev": dev_images}


@dataclass
class Vectors:
    """The cached outputs of one image set (arrays over photos; ``raw``: photos x recognisers x
    (face, mirror) x 128, NaN where no face was found)."""

    paths: np.ndarray
    identities: np.ndarray
    raw: np.ndarray  # the API's face
    central_raw: np.ndarray  # the face nearest the centre (= raw when it is the API's face)
    central_differs: np.ndarray
    faces: np.ndarray  # faces found in the photo
    box: np.ndarray  # x1, y1, x2, y2 in pixels of the API's face
    confidence: np.ndarray
    sharpness: np.ndarray
    brightness: np.ndarray
    seconds: np.ndarray  # wall time of detect + both recognisers per photo
    key: str

    @property
    def found(self) -> np.ndarray:
        return self.faces > 0

    def pack_vectors(self, pack: str, flip: bool = True, central: bool = False) -> np.ndarray:
        """Each photo's vector in ``pack`` (zeros where no face): what FaceEngine.embed returns;
        ``flip=False`` without the mirrored view, ``central`` for the face nearest the centre."""
        from facebank.engine.packs import PACKS

        raw = self.central_raw if central else self.raw
        parts = []
        for recognizer in PACKS[pack].recognizers:
            out = raw[:, RECOGNIZERS.index(recognizer.kind)]
            summed = out.sum(1) if flip else out[:, 0]
            unit = summed / np.linalg.norm(summed, axis=1, keepdims=True)
            parts.append(math.sqrt(recognizer.weight) * unit)
        vectors = np.concatenate(parts, axis=1)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.nan_to_num(vectors.astype(np.float32), nan=0.0)


def _load(cache: Path) -> dict | None:
    if not cache.exists():
        return None
    data = np.load(cache, allow_pickle=False)
    return {k: data[k] for k in data.files}


def _cache(cache_dir: Path, image_set: str, shard: tuple[int, int] | None) -> Path:
    return cache_dir / (
        f"vectors-{image_set}.npz" if shard is None else f"vectors-{image_set}.{shard[0]}of{shard[1]}.npz"
    )


def _merge(image_set: str, cache_dir: Path) -> None:
    """Join the shards' caches of a finished sharded run into the set's cache."""
    parts = sorted(cache_dir.glob(f"vectors-{image_set}.*of*.npz"))
    loaded = [_load(p) for p in parts]
    if not loaded or any(d is None or str(d["key"]) != pipeline_key() for d in loaded):
        return
    joined = {k: np.concatenate([d[k] for d in loaded if d is not None]) for k in loaded[0] if k != "key"}  # type: ignore[union-attr]
    images = [p for p, _ in SETS[image_set]()]
    position = {p: i for i, p in enumerate(images)}
    order = np.argsort([position.get(str(p), len(images)) for p in joined["paths"]], kind="stable")
    _save(_cache(cache_dir, image_set, None), {k: list(v[order]) for k, v in joined.items()}, pipeline_key())


def load(image_set: str = "lfw", cache_dir: Path = DEFAULT_CACHE, partial: bool = False) -> Vectors:
    """The set's vectors, computed where the cache lacks them (``partial``: only the photos a
    sharded run has embedded so far, whole people only, computing nothing)."""
    cache = _cache(cache_dir, image_set, None)
    images = SETS[image_set]()
    if partial:
        _merge(image_set, cache_dir)
        data = _load(cache)
        assert data is not None, f"no vectors of {image_set} in {cache_dir}"
        done = set(data["paths"].tolist())
        people = {identity for path, identity in images if path not in done}
        keep = ~np.isin(data["identities"], list(people))
        return Vectors(**{k: data[k][keep] for k in Vectors.__dataclass_fields__ if k != "key"}, key=str(data["key"]))
    data = _load(cache)
    if data is None or str(data["key"]) != pipeline_key() or len(data["paths"]) < len(images):
        _merge(image_set, cache_dir)
        data = _load(cache)
    if data is None or str(data["key"]) != pipeline_key() or len(data["paths"]) < len(images):
        embed(image_set, cache_dir)
        data = _load(cache)
    assert data is not None
    fields = {k: data[k] for k in Vectors.__dataclass_fields__ if k != "key"}
    return Vectors(**fields, key=str(data["key"]))


def _engine():
    from facebank import models
    from facebank.engine import get_engine
    from facebank.engine.packs import pack
    from facebank.settings import Settings

    settings = Settings.from_env()
    models.fetch(pack("fused").files[:4], model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    return get_engine("fused", settings.resolved_model_dir, settings.ort_threads)


def _raw(engine, rgb: np.ndarray, face) -> np.ndarray:
    out = np.empty((len(RECOGNIZERS), 2, DIMENSION), np.float32)
    for i, (recognizer, _) in enumerate(engine.recognizers):
        out[i] = recognizer.infer(recognizer.preprocess(rgb, face.landmarks))
    return out


def embed(
    image_set: str,
    cache_dir: Path,
    checkpoint: int = 250,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
) -> None:
    """Embed the set's photos (``shard`` (i, n): every n-th from the i-th, into its own cache)."""
    from facebank.engine.image import decode

    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = _cache(cache_dir, image_set, shard)
    images = SETS[image_set]()[:limit]
    if shard is not None:
        images = images[shard[0] :: shard[1]]
    key = pipeline_key()
    old = _load(cache)
    done: dict[str, list] = {k: [] for k in Vectors.__dataclass_fields__ if k != "key"}
    if old is not None and str(old["key"]) == key:
        done = {k: list(old[k]) for k in done}
    start = len(done["paths"])
    if [str(p) for p in done["paths"]] != [p for p, _ in images[:start]]:
        done, start = {k: [] for k in done}, 0
    engine = _engine()
    faces_dir = shared_dir() / "faces"
    nothing = np.full((len(RECOGNIZERS), 2, DIMENSION), np.nan, np.float32)
    began = time.time()
    for n, (path, identity) in enumerate(images[start:], start + 1):
        t0 = time.perf_counter()
        rgb = decode((faces_dir / path).read_bytes())
        faces = engine.detect(rgb)
        raw = central = nothing
        differs = False
        box, confidence, sharp, bright = np.full(4, np.nan), math.nan, math.nan, math.nan
        if faces:
            api = faces[0]
            raw = central = _raw(engine, rgb, api)
            h, w = rgb.shape[:2]
            centre = np.array([w / 2, h / 2])
            nearest = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
            if nearest is not api:
                differs, central = True, _raw(engine, rgb, nearest)
            box, confidence = api.box.astype(np.float64), api.confidence
            sharp, bright = api.quality["Sharpness"], api.quality["Brightness"]
        for k, v in (
            ("paths", path),
            ("identities", identity),
            ("raw", raw),
            ("central_raw", central),
            ("central_differs", differs),
            ("faces", len(faces)),
            ("box", box),
            ("confidence", confidence),
            ("sharpness", sharp),
            ("brightness", bright),
            ("seconds", time.perf_counter() - t0),
        ):
            done[k].append(v)
        if n % checkpoint == 0 or n == len(images):
            _save(cache, done, key)
            rate = (n - start) / (time.time() - began)
            print(f"{image_set}: {n}/{len(images)} photos, {rate:.1f}/s", flush=True)


def _save(cache: Path, done: dict[str, list], key: str) -> None:
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, key=key, **{k: np.array(v) for k, v in done.items()})
    tmp.replace(cache)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", choices=sorted(SETS), default="lfw")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--checkpoint", type=int, default=250)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--shard", default=None, help="i/n: embed every n-th photo from the i-th (run n at once)")
    args = parser.parse_args()
    shard = tuple(int(x) for x in args.shard.split("/")) if args.shard else None
    embed(args.set, args.cache_dir, args.checkpoint, args.limit, shard)  # type: ignore[arg-type]
    if shard is not None:
        _merge(args.set, args.cache_dir)
    vectors = load(args.set, args.cache_dir) if args.limit is None and shard is None else None
    if vectors is not None:
        print(
            f"{args.set}: {len(vectors.paths)} photos of {len(set(vectors.identities))} people; "
            f"{int((~vectors.found).sum())} without a face; "
            f"central face differs in {int(vectors.central_differs.sum())}; "
            f"median {np.median(vectors.seconds) * 1e3:.0f} ms per photo (pipeline {vectors.key})"
        )


if __name__ == "__main__":
    main()
