"""Image decoding: JPEG and PNG only, judged by content, oriented as displayed.

Limits are checked on the header, before any pixel is decoded, so a decompression bomb costs
nothing. A JPEG's EXIF orientation is applied so every box and landmark refers to the image as a
viewer sees it (Rekognition omits OrientationCorrection for face model 4 and later, and so do we).
A PNG is taken as stored, even with an eXIf chunk: "Amazon Rekognition doesn't perform image
correction for images in .png format" (botocore's model).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facebank.errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
)

MIN_SIDE = 80  # Rekognition's minimum image dimension
MAX_PIXELS = 80_000_000  # ~ 10000 x 8000; beyond that we refuse rather than decode
MAX_DECODE_SIDE = 2560  # JPEG draft decoding: large photos decode at 1/2..1/8 scale, cheaply

_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}

Image.MAX_IMAGE_PIXELS = None  # our own limit above is checked first, with our own error


def sniff_format(data: bytes) -> str | None:
    return next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)


def decode(data: bytes) -> np.ndarray:
    """Decode to an H x W x 3 uint8 RGB array, as displayed (large JPEGs at a reduced scale)."""
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImageFormatException("Request has invalid image format: only JPEG and PNG are supported")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            _check_size(width, height)  # header only: nothing decoded yet
            if fmt == "JPEG" and max(width, height) > MAX_DECODE_SIDE:
                image.draft("RGB", (MAX_DECODE_SIDE, MAX_DECODE_SIDE))
            image.load()
            oriented = ImageOps.exif_transpose(image) if fmt == "JPEG" else image
    except UnidentifiedImageError:
        raise InvalidImageFormatException(
            f"Request has invalid image format: the bytes start like a {fmt} but are not one"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageFormatException(f"Request has invalid image format: {fmt}: {exc}") from None
    return _to_rgb(oriented)


def _check_size(width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidParameterException(
            f"Image is {width}x{height} pixels; the minimum is {MIN_SIDE} pixels on each side"
        )
    if width * height > MAX_PIXELS:
        raise ImageTooLargeException(
            f"Image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
        )


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: PIL's convert("L") clips instead of scaling, so scale by hand.
        wide = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        gray = np.clip(wide * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colour; composite on white as a viewer would see them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))
