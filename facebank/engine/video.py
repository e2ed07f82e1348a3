"""Stored video: probe a file's VideoMetadata and decode frames at a sampling rate, with PyAV.

PyAV (its wheels ship FFmpeg) is imported inside the functions: only video jobs load it. The
video is read through a seekable binary file object (``operations.video_source.S3VideoSource``
reads S3 with ranged GETs), so a segment decodes only the bytes it needs.

What Rekognition Video accepts is what is accepted here: H.264 in an MPEG-4 or QuickTime (MOV)
container. Anything else, and any file FFmpeg cannot demux or decode, raises VideoDecodeError
with a message that becomes the job's StatusMessage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ACCEPTED_CODECS = ("h264",)
ACCEPTED_FORMATS = ("mov", "mp4")  # FFmpeg's demuxer "mov,mp4,m4a,3gp,3g2,mj2" serves both
# A file whose frames stop this long before where its header says it ends is truncated.
TRUNCATION_SLACK_MS = 1000
# The largest frame analysed: 4K UHD, either orientation. Rekognition's quotas page lists no frame
# size for stored video (10 GB, 6 hours, H.264 in MP4/MOV); this bounds a worker's memory (a
# decoded RGB frame is at most 24 MB) against a small file declaring 16000x9000 frames.
MAX_FRAME_LONG_SIDE = 3840
MAX_FRAME_SHORT_SIDE = 2160


class VideoDecodeError(Exception):
    """The video cannot be analysed; the message is user-facing (the job's StatusMessage)."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    format: str
    duration_ms: int
    frame_rate: float
    width: int
    height: int
    color_range: str  # "FULL" | "LIMITED"

    def metadata(self) -> dict:
        """botocore's VideoMetadata."""
        return {
            "Codec": self.codec,
            "DurationMillis": self.duration_ms,
            "Format": self.format,
            "FrameRate": self.frame_rate,
            "FrameHeight": self.height,
            "FrameWidth": self.width,
            "ColorRange": self.color_range,
        }


def _open(source: IO[bytes]) -> Any:
    import av

    source.seek(0)
    try:
        return av.open(source, mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise VideoDecodeError(f"The file is not a video that can be read (MP4 or MOV with H.264): {exc}") from None


def _video_stream(container: Any) -> Any:
    streams = container.streams.video
    if not streams:
        raise VideoDecodeError("The file has no video stream")
    return streams[0]


def _duration_ms(container: Any, stream: Any) -> int:
    if stream.duration is not None and stream.time_base is not None:
        return int(stream.duration * stream.time_base * 1000)
    if container.duration is not None:
        return int(container.duration / 1000)  # AV_TIME_BASE is microseconds
    raise VideoDecodeError("The video's duration cannot be read from the file")


def probe(source: IO[bytes]) -> VideoInfo:
    """The video's metadata; VideoDecodeError for not-a-video, no video stream, or a codec or
    container Rekognition Video does not accept."""
    container = _open(source)
    try:
        stream = _video_stream(container)
        codec = stream.codec_context.name
        if not set(container.format.name.split(",")) & set(ACCEPTED_FORMATS):
            raise VideoDecodeError(
                f"Unsupported format: the file is {container.format.long_name}; "
                "Rekognition Video analyses MP4 or MOV files (H.264)"
            )
        if codec not in ACCEPTED_CODECS:
            raise VideoDecodeError(f"Unsupported codec: the video is {codec}; Rekognition Video analyses H.264")
        rate = stream.average_rate or stream.guessed_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        if not rate or not width or not height:
            raise VideoDecodeError("The video stream has no frame size or frame rate")
        if max(width, height) > MAX_FRAME_LONG_SIDE or min(width, height) > MAX_FRAME_SHORT_SIDE:
            raise VideoDecodeError(
                f"The video's frames are {width}x{height}; the largest frame size analysed is "
                f"{MAX_FRAME_LONG_SIDE}x{MAX_FRAME_SHORT_SIDE} (4K UHD, either orientation)"
            )
        # FFmpeg's AVColorRange: 2 = JPEG (full); 1 = MPEG (limited), and 0 (unspecified) is limited
        # for the yuv420p H.264 carries, except the full-range "yuvj" pixel formats.
        full = stream.codec_context.color_range == 2 or (stream.codec_context.pix_fmt or "").startswith("yuvj")
        return VideoInfo(
            codec=codec,
            format=container.format.long_name,
            duration_ms=_duration_ms(container, stream),
            frame_rate=round(float(rate), 3),
            width=int(width),
            height=int(height),
            color_range="FULL" if full else "LIMITED",
        )
    finally:
        container.close()


def sample_frames(
    source: IO[bytes], fps: float, start_ms: int = 0, end_ms: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(timestamp ms, RGB uint8 H x W x 3) of the frames sampled at ``fps`` in [start_ms, end_ms).

    Samples sit on one grid for the whole video (every 1000/fps ms from 0; each takes the first
    frame at or after its grid time), so segments decoded apart sample what one pass would.
    Timestamps are presentation times from the start of the stream. A file that stops decoding
    (corrupt data, or frames ending well before the duration its header gives) raises
    VideoDecodeError, after the frames that did decode.
    """
    import av

    period = 1000.0 / fps
    container = _open(source)
    try:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"  # frame threads: decode keeps up while the detector runs
        duration = _duration_ms(container, stream)
        end = duration if end_ms is None else min(end_ms, duration)
        origin = stream.start_time or 0
        base = float(stream.time_base)
        if start_ms > 0:  # to the keyframe at or before start_ms
            container.seek(int((start_ms / 1000.0) / base) + origin, stream=stream, backward=True, any_frame=False)
        next_sample = math.ceil(start_ms / period) * period
        last_seen = -1
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                ts = (frame.pts - origin) * base * 1000.0
                last_seen = max(last_seen, int(ts))
                if ts >= end:
                    return
                if ts < start_ms or ts + 1e-6 < next_sample:
                    continue
                yield int(round(ts)), frame.to_ndarray(format="rgb24")
                while next_sample <= ts + 1e-6:
                    next_sample += period
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"The video could not be decoded after {max(last_seen, 0)} ms: {exc}") from None
        if last_seen < end - TRUNCATION_SLACK_MS - period:
            raise VideoDecodeError(
                f"The video ends after {max(last_seen, 0)} ms of the {duration} ms its header gives: "
                "the file is truncated or corrupt"
            )
    finally:
        container.close()
