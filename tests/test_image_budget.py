"""Decoding within a memory budget: images whose decoded buffer would exceed it are refused from
the header (with the mode in the message); images over MAX_DECODE_SIDE are averaged down strip by
strip, as the full-size conversion would be; images within it decode exactly as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from support import encode, image_bytes

from facebank.engine import image as decoding
from facebank.errors import ImageTooLargeException


def test_rgba_over_the_budget_refused_through_the_api(rekognition):
    # The 311 KB PNG: 8940 x 8940 RGBA is under 80 MP but 320 MB decoded.
    png = encode(Image.new("RGBA", (8940, 8940), (40, 80, 120, 128)), "PNG", optimize=True)
    with pytest.raises(rekognition.exceptions.ImageTooLargeException) as info:
        rekognition.detect_faces(Image={"Bytes": png})
    assert "mode RGBA" in info.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    "mode, size, refused",
    [
        ("RGBA", (6500, 6500), True),
        ("RGB", (80, 999000), True),
        ("RGBA", (6000, 6000), False),
        ("I;16", (9000, 9000), False),  # 2 bytes a pixel: 81 MP fit where RGBA's 42 MP do not
        ("L", (80, 999000), False),
    ],
)
def test_budget_counts_bytes_per_pixel(mode, size, refused):
    header_only = Image.new(mode, (1, 1))
    header_only._size = size  # the budget is judged from the header: no pixels needed
    if refused:
        with pytest.raises(ImageTooLargeException, match=f"mode {mode}"):
            decoding._check_budget(header_only)
    else:
        assert decoding._check_budget(header_only) <= decoding.DECODE_BUDGET


def _reference(img: Image.Image, factor: int) -> np.ndarray:
    """The full-size RGB conversion, then a plain block average: what the strips must equal."""
    full = decoding._to_rgb(img).astype(np.float64)
    h, w = full.shape[:2]
    pad = np.pad(full, ((0, -h % factor), (0, -w % factor), (0, 0)), mode="edge")
    return pad.reshape(pad.shape[0] // factor, factor, pad.shape[1] // factor, factor, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "I;16", "L"])
def test_large_png_reduced_as_the_full_conversion_would_be(monkeypatch, mode):
    monkeypatch.setattr(decoding, "MAX_DECODE_SIDE", 256)
    rng = np.random.default_rng(7)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (300, 1000), dtype=np.uint16))
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 255, (300, 1000), dtype=np.uint8))
    else:
        img = Image.fromarray(rng.integers(0, 255, (300, 1000, len(mode)), dtype=np.uint8), mode)
    got = decoding.decode(encode(img, "PNG"))
    want = _reference(Image.open(io.BytesIO(encode(img, "PNG"))), 4)
    assert got.shape == (75, 250, 3)
    assert np.abs(got[:-1, :-1].astype(np.float64) - want[:-1, :-1]).max() <= 1.0


def test_photos_within_the_side_decode_as_before():
    data = image_bytes("exif_orientation/pillow_hopper.jpg")

    with Image.open(io.BytesIO(data)) as img:
        want = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert np.array_equal(decoding.decode(data), want)
    png = encode(Image.fromarray(want), "PNG")
    assert np.array_equal(decoding.decode(png), want)
