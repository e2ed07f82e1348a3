"""Stored video: frames above 4K UHD are refused at probe with a clear message (the job ends
FAILED with it as StatusMessage), in either orientation; 4K itself is accepted."""

from __future__ import annotations

import io

import pytest
from video_clips import make_clip

from facebank.engine.video import VideoDecodeError, probe


@pytest.mark.parametrize("size", [(3856, 2160), (2176, 3840), (4096, 2304)])
def test_frames_over_4k_refused_at_probe(size):
    clip = make_clip([], duration_ms=200, fps=5, size=size)
    with pytest.raises(VideoDecodeError, match=r"frames are \d+x\d+; the largest frame size analysed is 3840x2160"):
        probe(io.BytesIO(clip))


@pytest.mark.parametrize("size", [(3840, 2160), (2160, 3840)])
def test_4k_frames_accepted(size):
    info = probe(io.BytesIO(make_clip([], duration_ms=200, fps=5, size=size)))
    assert (info.width, info.height) == size
