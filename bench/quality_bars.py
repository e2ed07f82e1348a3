"""Measure the face-quality distribution behind QualityFilter's bars (facebank/operations/quality.py).

    python bench/quality_bars.py

Prints percentiles of detection Confidence, Sharpness, Brightness, |Yaw|, |Pitch| and the face
box's shorter side in pixels, over the largest face of every faces/dev image (ordinary photos of
people), and how many of those faces each QualityFilter level would refuse, and why.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from common import dev_images, load_engine

from facebank.engine.image import decode
from facebank.operations.quality import BARS, quality_reasons


def main() -> None:
    engine = load_engine()
    faces = []
    for path, _ in dev_images():
        found = engine.detect(decode(path.read_bytes()), max_faces=1)
        faces.extend(found)
    print(f"{len(faces)} faces (largest per image)")
    columns = {
        "Confidence": [f.confidence for f in faces],
        "Sharpness": [f.quality["Sharpness"] for f in faces],
        "Brightness": [f.quality["Brightness"] for f in faces],
        "|Yaw|": [abs(f.pose["Yaw"]) for f in faces],
        "|Pitch|": [abs(f.pose["Pitch"]) for f in faces],
        "side px": [float(min(f.box[2:] - f.box[:2])) for f in faces],
    }
    qs = [1, 2, 5, 10, 25, 50, 75, 90, 95, 99]
    print(f"{'':12}" + "".join(f"{q:>8}%" for q in qs))
    for name, values in columns.items():
        print(f"{name:12}" + "".join(f"{v:9.1f}" for v in np.percentile(values, qs)))
    for level in BARS:
        if BARS[level] is None:
            continue
        reasons = [quality_reasons(f, level) for f in faces]
        refused = sum(1 for r in reasons if r)
        why = Counter(x for r in reasons for x in r)
        print(f"{level:6} refuses {refused}/{len(faces)} ({100 * refused / len(faces):.1f}%): {dict(why)}")


if __name__ == "__main__":
    main()
