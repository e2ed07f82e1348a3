"""Per-image latency of the face pipeline with one thread, against face_recognition as a peer.

    python bench/latency.py            # prints a table; add --limit N for a quick look

Stages on every faces/dev image: decode, detect (incl. landmarks, pose, quality), embed (largest
face). Then DetectFaces end to end (decode + detect) on 640x480 photos made by centre-cropping
and resizing the full-size dev photos, the size the target is stated for. When the
face_recognition package (dlib) is installed, its default pipeline (HOG detector + ResNet
embedding) runs on the same images in the same process for comparison.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

os.environ["FACEBANK_ORT_THREADS"] = "1"  # one thread, as the targets are stated

import numpy as np
from common import dev_images, load_engine
from PIL import Image

from facebank.engine.image import decode


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - start) * 1000


def vga(data: bytes) -> bytes | None:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    if w < 640 or h < 480:
        return None
    crop_w, crop_h = min(w, h * 4 // 3), min(h, w * 3 // 4)
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    out = io.BytesIO()
    image.crop((left, top, left + crop_w, top + crop_h)).resize((640, 480), Image.Resampling.BILINEAR).save(
        out, "JPEG", quality=90
    )
    return out.getvalue()


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):7.1f}  p90 {np.percentile(values, 90):7.1f}  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    images = dev_images()[: args.limit or None]
    engine = load_engine()
    warm = decode(images[0][0].read_bytes())
    engine.embed(warm, engine.detect(warm)[0])

    stages = {"decode": [], "detect": [], "embed": [], "total": []}
    blobs = []
    for path, _ in images:
        data = path.read_bytes()
        blobs.append(data)
        rgb, t_decode = timed(decode, data)
        faces, t_detect = timed(engine.detect, rgb)
        t_embed = timed(engine.embed, rgb, faces[0])[1] if faces else 0.0
        for key, value in zip(stages, (t_decode, t_detect, t_embed, t_decode + t_detect + t_embed), strict=False):
            stages[key].append(value)

    vga_images = [v for v in (vga(b) for b in blobs) if v]
    detect_vga = [timed(lambda d: engine.detect(decode(d)), d)[1] for d in vga_images]

    print(f"facebank ({engine.pack.name} pack), one thread, ms per image on {len(images)} faces/dev images")
    for key, values in stages.items():
        print(f"  {key:8s} {summary(values)}")
    print(f"  DetectFaces on 640x480 photos: {summary(detect_vga)}   target: median <= 40 ms")

    try:
        import face_recognition
    except ImportError:
        print("face_recognition not installed: peer not measured (pip install dlib-bin face_recognition --no-deps)")
        return
    peer = []
    for data in blobs:
        start = time.perf_counter()
        rgb = face_recognition.load_image_file(io.BytesIO(data))
        boxes = face_recognition.face_locations(rgb)
        face_recognition.face_encodings(rgb, boxes[:1])
        peer.append((time.perf_counter() - start) * 1000)
    ratio = statistics.median(peer) / statistics.median(stages["total"])
    print(f"face_recognition default pipeline (HOG + ResNet), same images: {summary(peer)}")
    print(f"  facebank is {ratio:.1f}x faster per image (median; target >= 5x)")


if __name__ == "__main__":
    main()
