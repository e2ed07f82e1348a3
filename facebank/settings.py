"""Every setting facebank reads, in one frozen object, read once per process.

``Settings.from_env()`` is the only place that reads ``FACEBANK_*`` variables; ``facebank serve``
overlays its command-line flags with ``dataclasses.replace``. Everything below it (operations,
engine, storage) receives values, never the environment, so a test builds a ``Settings`` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def _default_model_dir(env: Mapping[str, str]) -> Path:
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facebank" / "models"


@dataclass(frozen=True)
class Settings:
    # Models
    pack: str | None = None  # FACEBANK_PACK; None means the default pack
    model_dir: Path | None = None  # FACEBANK_MODEL_DIR; None means ~/.cache/facebank/models
    model_mirror: str | None = None  # FACEBANK_MODEL_MIRROR: a directory to copy model files from
    ort_threads: int = 1  # FACEBANK_ORT_THREADS: onnxruntime intra-op threads per inference
    # Embedded storage (facebank serve)
    data_dir: Path | None = None  # FACEBANK_DATA_DIR
    access_key_id: str | None = None  # FACEBANK_ACCESS_KEY_ID: the one key pair serve accepts
    secret_access_key: str | None = None  # FACEBANK_SECRET_ACCESS_KEY
    s3_endpoint_url: str | None = None  # --s3-endpoint-url; None: boto3's own resolution
    # AWS storage (Lambda)
    vector_bucket: str | None = None  # FACEBANK_VECTOR_BUCKET
    table_prefix: str = "facebank-"  # FACEBANK_TABLE_PREFIX
    account_id: str = "000000000000"  # FACEBANK_ACCOUNT_ID, for collection ARNs
    region: str = "us-east-1"  # AWS_REGION / AWS_DEFAULT_REGION
    # Ingest and compaction functions
    ingest_table: str | None = None  # FACEBANK_INGEST_TABLE
    ingest_bucket: str = ""  # FACEBANK_INGEST_BUCKET
    ingest_prefix: str = ""  # FACEBANK_INGEST_PREFIX
    compact_min_age_s: float = 300.0  # FACEBANK_COMPACT_MIN_AGE_S
    # Limits and caches
    segment_cache_mb: int = 4096  # FACEBANK_SEGMENT_CACHE_MB
    max_faces_per_collection: int = 20_000_000  # FACEBANK_MAX_FACES_PER_COLLECTION
    # Stored-video jobs (docs/video.md)
    video_sample_fps: float = 4.0  # FACEBANK_VIDEO_SAMPLE_FPS: frames analysed per second of video (docs/video.md)
    video_workers: int = 1  # FACEBANK_VIDEO_WORKERS / --video-workers: jobs analysed at once by serve
    video_segment_s: int = 120  # FACEBANK_VIDEO_SEGMENT_S: seconds of video per analysis segment
    max_video_jobs: int = 20  # FACEBANK_MAX_VIDEO_JOBS: jobs IN_PROGRESS at once (Rekognition's quota)
    sns_endpoint_url: str | None = None  # FACEBANK_SNS_ENDPOINT_URL / --sns-endpoint-url; None: boto3's own
    video_queue_url: str | None = None  # FACEBANK_VIDEO_QUEUE_URL (AWS: the video worker's queue)
    notification_topics: tuple[str, ...] = ()  # FACEBANK_NOTIFICATION_TOPICS: ARN patterns; empty: any

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else _default_model_dir(os.environ)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            return env.get(name) or None

        def path(name: str) -> Path | None:
            value = text(name)
            return Path(value).expanduser() if value else None

        def number(name: str, kind: type, default: float) -> int | float:
            value = text(name)
            if value is None:
                return default
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a{'n integer' if kind is int else ' number'}") from None

        return cls(
            pack=text("FACEBANK_PACK"),
            model_dir=path("FACEBANK_MODEL_DIR") or _default_model_dir(env),
            model_mirror=text("FACEBANK_MODEL_MIRROR"),
            ort_threads=int(number("FACEBANK_ORT_THREADS", int, 1)),
            data_dir=path("FACEBANK_DATA_DIR"),
            access_key_id=text("FACEBANK_ACCESS_KEY_ID"),
            secret_access_key=text("FACEBANK_SECRET_ACCESS_KEY"),
            vector_bucket=text("FACEBANK_VECTOR_BUCKET"),
            table_prefix=env.get("FACEBANK_TABLE_PREFIX", "facebank-"),
            account_id=text("FACEBANK_ACCOUNT_ID") or "000000000000",
            region=text("AWS_REGION") or text("AWS_DEFAULT_REGION") or "us-east-1",
            ingest_table=text("FACEBANK_INGEST_TABLE"),
            ingest_bucket=env.get("FACEBANK_INGEST_BUCKET", ""),
            ingest_prefix=env.get("FACEBANK_INGEST_PREFIX", ""),
            compact_min_age_s=float(number("FACEBANK_COMPACT_MIN_AGE_S", float, 300.0)),
            segment_cache_mb=int(number("FACEBANK_SEGMENT_CACHE_MB", int, 4096)),
            max_faces_per_collection=int(number("FACEBANK_MAX_FACES_PER_COLLECTION", int, 20_000_000)),
            video_sample_fps=float(number("FACEBANK_VIDEO_SAMPLE_FPS", float, 4.0)),
            video_workers=int(number("FACEBANK_VIDEO_WORKERS", int, 1)),
            video_segment_s=int(number("FACEBANK_VIDEO_SEGMENT_S", int, 120)),
            max_video_jobs=int(number("FACEBANK_MAX_VIDEO_JOBS", int, 20)),
            sns_endpoint_url=text("FACEBANK_SNS_ENDPOINT_URL"),
            video_queue_url=text("FACEBANK_VIDEO_QUEUE_URL"),
            notification_topics=tuple(
                t.strip() for t in env.get("FACEBANK_NOTIFICATION_TOPICS", "").split(",") if t.strip()
            ),
        )
