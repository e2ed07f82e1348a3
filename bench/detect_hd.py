"""What the detector's second pass for small faces costs on HD video frames: ``FaceEngine.detect``
on frames of a shared clip scaled to 1280x720 and 1920x1080, as served and with the first pass only
(the image scaled to 960 px, as before), CPU time on one thread, in the same run.

    python bench/detect_hd.py [--clip intel_classroom.mp4] [--frames 4] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import av
import numpy as np
from common import load_engine, shared_dir
from PIL import Image

from facebank.engine import detector


def frames(clip: str, count: int, step: int = 10) -> list[np.ndarray]:
    with av.open(str(shared_dir() / "videos" / clip)) as container:
        decoded = (f.to_ndarray(format="rgb24") for f in container.decode(video=0))
        return [f for i, f in zip(range(count * step), decoded, strict=False) if i % step == 0]


def timed(engine, images: list[np.ndarray], repeat: int) -> tuple[float, int]:
    engine.detect(images[0])  # warm
    start, found = time.process_time(), 0
    for _ in range(repeat):
        for image in images:
            found += len(engine.detect(image))
    return (time.process_time() - start) / (repeat * len(images)) * 1000, found // repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="intel_classroom.mp4")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    engine = load_engine()
    source = frames(args.clip, args.frames)
    served = detector.FaceDetector.detect
    print(f"{args.clip}: {len(source)} frames x {args.repeat}, CPU ms per frame (faces found per pass)")
    for size in ((1280, 720), (1920, 1080)):
        images = [np.asarray(Image.fromarray(f).resize(size)) for f in source]
        both, found_both = timed(engine, images, args.repeat)
        detector.FaceDetector.detect = lambda self, rgb: self._detect_at(rgb, detector.DETECT_LONG_SIDE)
        try:
            first, found_first = timed(engine, images, args.repeat)
        finally:
            detector.FaceDetector.detect = served
        print(f"  {size[0]}x{size[1]}: first pass only {first:.1f} ms ({found_first}), ", end="")
        print(f"served {both:.1f} ms ({found_both})")


if __name__ == "__main__":
    main()
