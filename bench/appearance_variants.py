"""Feature sets tried for Beard and Mustache beside the served pixel features (``appearance.py --compare``).

Not served: each set is scored on the bench's folds and protocol (person-disjoint folds, a logistic head
on whitened principal components, cross-fitted Platt calibration, Value = P >= 0.5, 95 % bootstrap over
people), alone and combined with the served ``pix`` features, to say what would (or would not) close
the gap to the targets (docs/faces.md). The sets:

- ``pix``: ``appearance.pixel_features`` (served); ``ag`` / ``ex``: face-api AgeGenderNet's (512) and
  FaceExpressionNet's (256) pooled features, which serving could only give by adding an output to those
  converted graphs;
- ``vec``: the recogniser's 128-D vector (``FaceEngine.embed``: DetectFaces does not compute it);
- ``hog`` and ``lbp``: a histogram of oriented gradients (8-pixel cells, 9 unsigned orientations, 2 x 2
  cell blocks, L2-Hys) and uniform local binary patterns (8 neighbours, 16-pixel cells, 59 bins) of a
  grey 64 x 48 crop of the lower face aligned to the mesh: from cheek (vertex 234) to cheek (454) across,
  from 0.10 to 0.85 of that width below the line between them (the nose tip is at about 0.16, the
  upper lip 0.30, the chin 0.70), written in numpy (no image library is a dependency).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, TOP, BOTTOM = 64, 48, 0.10, 0.85  # the lower-face crop (see the module's docstring)
RIDGES = (30.0, 300.0)
COMBOS = (
    ("pix",),
    ("ag",),
    ("vec",),
    ("hog",),
    ("lbp",),
    ("pix", "ag"),
    ("pix", "vec"),
    ("pix", "hog"),
    ("pix", "lbp"),
    ("pix", "hog", "lbp"),
    ("pix", "ag", "vec"),
    ("pix", "ag", "vec", "hog", "lbp"),
)


def lower_face(rgb: np.ndarray, mesh: np.ndarray) -> np.ndarray:
    """Grey HEIGHT x WIDTH crop of the lower face in the mesh's frame (bilinear)."""
    from PIL import Image

    left, right = mesh[234, :2], mesh[454, :2]
    across = right - left
    width = float(np.linalg.norm(across))
    across /= max(width, 1e-6)
    down = np.array([-across[1], across[0]])
    du, dv = width / WIDTH * across, width * (BOTTOM - TOP) / HEIGHT * down
    origin = left + width * TOP * down
    data = (du[0], dv[0], origin[0], du[1], dv[1], origin[1])  # output (x, y) -> input origin + x du + y dv
    grey = Image.fromarray(rgb).convert("L")
    return np.asarray(grey.transform((WIDTH, HEIGHT), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR))


def hog(image: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    gy, gx = np.gradient(image.astype(np.float64))
    magnitude, angle = np.hypot(gx, gy), np.rad2deg(np.arctan2(gy, gx)) % 180
    which = np.minimum((angle / (180 / bins)).astype(int), bins - 1)
    rows, cols = image.shape[0] // cell, image.shape[1] // cell
    cells = np.zeros((rows, cols, bins))
    for i in range(rows):
        for j in range(cols):
            box = (slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell))
            cells[i, j] = np.bincount(which[box].ravel(), magnitude[box].ravel(), bins)
    blocks = []
    for i in range(rows - 1):
        for j in range(cols - 1):
            v = cells[i : i + 2, j : j + 2].ravel()
            v = np.minimum(v / np.sqrt((v**2).sum() + 1e-6), 0.2)
            blocks.append(v / np.sqrt((v**2).sum() + 1e-6))
    return np.concatenate(blocks)


def _uniform_codes() -> np.ndarray:
    """8-bit LBP code -> its uniform-pattern bin (58 patterns with at most two 0/1 transitions, then the rest)."""
    uniform = [c for c in range(256) if bin(c ^ (((c << 1) & 0xFF) | (c >> 7))).count("1") <= 2]
    table = np.full(256, len(uniform))
    table[uniform] = np.arange(len(uniform))
    return table


UNIFORM = _uniform_codes()
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def lbp(image: np.ndarray, cell: int = 16) -> np.ndarray:
    x = image.astype(np.float64)
    centre = x[1:-1, 1:-1]
    code = np.zeros(centre.shape, int)
    for bit, (dy, dx) in enumerate(NEIGHBOURS):
        code |= (x[1 + dy : x.shape[0] - 1 + dy, 1 + dx : x.shape[1] - 1 + dx] >= centre).astype(int) << bit
    binned = UNIFORM[code]
    h, w = binned.shape
    return np.concatenate(
        [
            np.bincount(binned[i : i + cell, j : j + cell].ravel(), minlength=59) / cell**2
            for i in range(0, h - cell + 1, cell)
            for j in range(0, w - cell + 1, cell)
        ]
    )


def extract(paths: list[str], cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """photo -> {"vec", "hog", "lbp"}, kept in ``cache``/variants.npz (the same face as the bench's)."""
    from common import load_engine, shared_dir

    from facebank.engine.image import decode

    store = cache / "variants.npz"
    known: dict[str, dict[str, np.ndarray]] = {}
    if store.exists():
        with np.load(store) as npz:
            data = {k: npz[k] for k in npz.files}
        for i, path in enumerate(data["paths"].tolist()):
            known[path] = {k: data[k][i] for k in ("found", "vec", "crop")}
    todo = [p for p in dict.fromkeys(paths) if p not in known]
    if todo:
        engine, faces_dir, began = load_engine(), shared_dir() / "faces", time.time()
        for rel in todo:
            rgb = decode((faces_dir / rel).read_bytes())
            faces = engine.detect(rgb)
            if not faces:
                known[rel] = {"found": False, "vec": np.zeros(128), "crop": np.zeros((HEIGHT, WIDTH), np.uint8)}
                continue
            face = faces[0]
            if rel.startswith("lfw/"):
                centre = np.array(rgb.shape[1::-1]) / 2
                face = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
            mesh = engine.attribute_models.measure(rgb, face, eyes=False).mesh
            known[rel] = {"found": True, "vec": engine.embed(rgb, face), "crop": lower_face(rgb, mesh)}
        print(f"  variants: vectors and lower-face crops of {len(todo)} photos ({time.time() - began:.0f} s)")
        names = sorted(known)
        np.savez(
            store,
            paths=np.array(names),
            **{k: np.array([known[p][k] for p in names]) for k in ("found", "vec", "crop")},
        )
    wanted = set(paths)
    return {
        p: {"found": f["found"], "vec": f["vec"], "hog": hog(f["crop"]), "lbp": lbp(f["crop"])}
        for p, f in known.items()
        if p in wanted
    }


def compare(labels, features, cache: Path, columns: dict[str, str]) -> None:
    """Balanced accuracy (95 % interval over people) of every set in COMBOS at each of RIDGES."""
    import appearance as bench

    extra = extract(sorted(features), cache)
    usable = sorted(p for p, f in features.items() if f["found"] and p in extra and extra[p]["found"])

    def column_of(path: str, name: str) -> np.ndarray:
        return features[path][name] if name in features[path] else extra[path][name]

    bases = {}
    for name in sorted({n for combo in COMBOS for n in combo}):
        x = np.array([column_of(p, name) for p in usable], dtype=np.float64)
        blocks = (2 * 468,) if name == "pix" else ()
        bases[name] = bench.fit_basis(x, components=min(bench.COMPONENTS, x.shape[1]), blocks=blocks)
    print(f"\nvariants ({len(usable)} faces with every set; served: pix at ridge {bench.RIDGE:g}); balanced accuracy")
    print("| attribute | features | " + " | ".join(f"ridge {r:g}" for r in RIDGES) + " |")
    print("|---|---|" + "---|" * len(RIDGES))
    for column, name in columns.items():
        paths = [p for p in usable if p in labels and labels[p][column] in ("0", "1")]
        y = np.array([float(labels[p][column]) for p in paths])
        people = np.array([p.split("/")[1] for p in paths])
        folds = bench.person_folds(people)
        for combo in COMBOS:
            x = np.hstack(
                [bases[n].project(np.array([column_of(p, n) for p in paths], dtype=np.float64)) for n in combo]
            )
            cells = []
            for ridge in RIDGES:
                p = bench.out_of_fold(x, y, folds, ridge)[1]
                boot = bench.bootstrap(p, y, people)
                cells.append(f"{bench.scores(p, y)[0]:.3f} ({bench.interval(boot[:, 0])})")
            print(f"| {name} | {'+'.join(combo)} | " + " | ".join(cells) + " |", flush=True)
