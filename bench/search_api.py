"""bench/search_accuracy.py's face protocol through a real `facebank serve` and boto3, beside the
same protocol on the cached vectors for the same people (``--via api``).

A sample of ``--people`` of the enrolled people and as many strangers (seeded, from the same
split as the full run) is used: each enrolled person's first photo is indexed with IndexFaces
(MaxFaces=1, the API's defaults otherwise: QualityFilter AUTO may refuse a face, which then cannot
be found), and every mated and stranger probe is searched with SearchFacesByImage
(FaceMatchThreshold=0, MaxFaces=1, so the top match's Similarity is seen below 80 too; a photo
with no face is InvalidParameterException and finds nobody). The API's Similarity is monotonic in
the cosine, so FNIR at FPIR is the same computation on either; "at 80" uses Similarity >= 80.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from lfw_vectors import Vectors, shared_dir
from search_accuracy import MATED_CAP, STRANGER_CAP, Searches, face_searches, split

from facebank.engine.packs import PACKS, Calibration


def _serve(data_dir: Path, pack: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "facebank.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen([*cmd, "--pack", pack], env=os.environ.copy(), stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.2)  # readiness polling, bounded by the deadline
    process.terminate()
    raise RuntimeError("facebank serve did not become healthy")


def compare_with_api(vectors: Vectors, args: argparse.Namespace) -> None:
    import boto3

    pack = args.packs.split(",")[0]
    s = split(vectors, args.gallery, args.seed)
    rng = np.random.default_rng(args.seed)
    enrolled = np.unique(s.owner[s.enrolled])
    strangers = np.unique(s.owner[~s.enrolled])
    sample = np.concatenate(
        [rng.choice(enrolled, min(args.people, enrolled.size), replace=False), rng.choice(strangers, args.people // 2)]
    )
    keep = np.isin(s.owner, sample)
    sub = Vectors(**{k: getattr(vectors, k)[keep] for k in Vectors.__dataclass_fields__ if k != "key"}, key=vectors.key)
    sub_split = split(sub, 0, args.seed)
    sub_split.enrolled[:] = np.isin(s.owner[keep], enrolled)
    by_vectors = face_searches(sub_split, sub.pack_vectors(pack))
    cal = PACKS[pack].calibration

    faces_dir = shared_dir() / "faces"
    with tempfile.TemporaryDirectory() as tmp:
        process, url = _serve(Path(tmp) / "data", pack)
        try:
            client = boto3.client(
                "rekognition",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            )
            client.create_collection(CollectionId="lfw")
            gallery = sub_split.enrolled & (sub_split.rank == 0)
            for i in np.flatnonzero(gallery):
                client.index_faces(
                    CollectionId="lfw",
                    Image={"Bytes": (faces_dir / str(sub.paths[i])).read_bytes()},
                    ExternalImageId=str(sub_split.owner[i]),
                    MaxFaces=1,
                )

            def top(i: int) -> tuple[int | None, float]:
                try:
                    matches = client.search_faces_by_image(
                        CollectionId="lfw",
                        Image={"Bytes": (faces_dir / str(sub.paths[i])).read_bytes()},
                        FaceMatchThreshold=0,
                        MaxFaces=1,
                    )["FaceMatches"]
                except client.exceptions.InvalidParameterException:
                    return None, -np.inf
                if not matches:
                    return None, -np.inf
                return int(matches[0]["Face"]["ExternalImageId"]), float(matches[0]["Similarity"])

            mated = np.flatnonzero(sub_split.enrolled & (sub_split.rank > 0) & (sub_split.rank <= MATED_CAP))
            stranger = np.flatnonzero(~sub_split.enrolled & (sub_split.rank < STRANGER_CAP))
            m = [top(i) for i in mated]
            st = [top(i) for i in stranger]
        finally:
            process.terminate()
            process.wait(timeout=30)
    by_api = Searches(
        sub_split.owner[mated],
        np.array([o == sub_split.owner[i] for (o, _), i in zip(m, mated, strict=True)]),
        np.array([x for _, x in m]),
        sub_split.owner[stranger],
        np.array([x for _, x in st]),
    )
    # the vectors' searches on the Similarity scale, so "at 80" reads the same on both
    on_scale = Searches(
        by_vectors.mated_owner,
        by_vectors.mated_right,
        _similarity(cal, by_vectors.mated_score),
        by_vectors.stranger_owner,
        _similarity(cal, by_vectors.stranger_score),
    )
    print(f"{pack}: {int(gallery.sum())} indexed, {mated.size} mated and {stranger.size} non-mated probes")
    for label, searches in (("through the API", by_api), ("on the cached vectors", on_scale)):
        fnir = [searches.fnir_at_fpir(f)[0] for f in (0.01, 0.001)]
        found, matched = searches.at(80.0)
        print(
            f"  {label:22s} FNIR@FPIR1% {fnir[0]:.3f}  FNIR@FPIR0.1% {fnir[1]:.3f}  at 80: found {found:.3f}, "
            f"strangers matched {matched:.3f}"
        )


def _similarity(cal: Calibration, cosines: np.ndarray) -> np.ndarray:
    return np.array([-np.inf if not np.isfinite(c) else cal.similarity(float(c)) for c in cosines])
