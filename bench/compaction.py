"""Search on a collection built by single-face IndexFaces calls (one segment each), before and
after `facebank serve`'s background compaction (issue 23, point 6):

    python bench/compaction.py --faces 2000 --searches 40

In-process, on embedded storage in a temporary directory (the same operations `facebank serve`
dispatches). The face photo is scaled down so that indexing 2,000 faces takes minutes, not hours;
the segment layout (one segment per call) is what the bench is about.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from facebank.maintenance import Compactor
from facebank.protocol import dispatch
from facebank.settings import Settings
from facebank.wiring import embedded_context

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "faces" / "dev" / "barack_obama" / "1.jpg"


def call(ctx, name: str, request: dict) -> dict:
    response = dispatch(name, json.dumps(request).encode(), ctx)
    assert response.status == 200, response.body
    return json.loads(response.body)


def timed_searches(ctx, image: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call(ctx, "SearchFacesByImage", {"CollectionId": "c", "Image": {"Bytes": image}, "MaxFaces": 10})
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=40)
    args = parser.parse_args()
    photo = Image.open(PHOTO).convert("RGB")
    photo.thumbnail((320, 320))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    image = base64.b64encode(buffer.getvalue()).decode()
    with tempfile.TemporaryDirectory() as tmp:
        import dataclasses

        ctx = embedded_context(dataclasses.replace(Settings.from_env(), data_dir=Path(tmp)))
        call(ctx, "CreateCollection", {"CollectionId": "c"})
        start = time.perf_counter()
        for i in range(args.faces):
            request = {"CollectionId": "c", "Image": {"Bytes": image}, "MaxFaces": 1, "ExternalImageId": f"p{i}"}
            call(ctx, "IndexFaces", request)  # FaceIds derive from the image and its ExternalImageId
            if (i + 1) % 500 == 0:
                print(f"indexed {i + 1} ({time.perf_counter() - start:.0f} s)", flush=True)
        segments = len(ctx.storage.vectors.list_segments("c"))
        timed_searches(ctx, image, 3)  # warm: segment cache, engine
        before = timed_searches(ctx, image, args.searches)
        start = time.perf_counter()
        merged = Compactor(ctx, min_age_s=0.0).run_once()
        took = time.perf_counter() - start
        after_segments = len(ctx.storage.vectors.list_segments("c"))
        timed_searches(ctx, image, 3)
        after = timed_searches(ctx, image, args.searches)
    p50b, p50a = statistics.median(before) * 1000, statistics.median(after) * 1000
    print(f"{args.faces} faces, {segments} segments -> compaction merged {merged} in {took:.1f} s -> {after_segments}")
    print(
        f"SearchFacesByImage p50 over {args.searches} searches: {p50b:.1f} ms on {segments} segments, "
        f"{p50a:.1f} ms compacted: ratio {p50b / p50a:.2f}"
    )


if __name__ == "__main__":
    main()
