"""Image decoding: JPEG and PNG only, judged by content, oriented as displayed.

Limits are checked on the header, before any pixel is decoded, so a decompression bomb costs
nothing: the pixel count, and the bytes the decoder will hold for the image's mode (Pillow keeps
RGB, RGBA and LA at 4 bytes a pixel, 16-bit grey at 2, L and P at 1), which must fit
``DECODE_BUDGET``. Large JPEGs decode at a reduced scale (draft mode); any image with a side over
``MAX_DECODE_SIDE`` is then reduced to it before conversion, so at most one full-size buffer exists
while decoding (images within ``MAX_DECODE_SIDE`` decode exactly as before). At most
``LARGE_DECODES`` decodes of over ``LARGE_BYTES`` run at once, a number set from the machine's memory.

A JPEG's EXIF orientation is applied so every box and landmark refers to the image as a
viewer sees it (Rekognition omits OrientationCorrection for face model 4 and later, and so do we).
A PNG is taken as stored, even with an eXIf chunk: "Amazon Rekognition doesn't perform image
correction for images in .png format" (botocore's model).
"""

from __future__ import annotations

import io
import math
import os
import threading
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
DECODE_BUDGET = 160 * 1024 * 1024  # bytes the decoder may hold for one image: peak growth stays under 300 MB
LARGE_BYTES = 64 * 1024 * 1024  # a decode holding more than this waits for a slot (LARGE_DECODES)
# Bytes per pixel Pillow allocates for an image of each mode (RGB is stored as 4 bytes).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _large_decodes() -> int:
    """How many large decodes may run at once: a quarter of physical memory, in ~300 MB peaks, 1..8."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1
    return max(1, min(8, memory // 4 // (300 * 1024 * 1024)))


LARGE_DECODES = _large_decodes()
_large = threading.BoundedSemaphore(LARGE_DECODES)

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
            held = _check_budget(image)  # the decoder's buffer at the (draft) size, from the header
            with _large if held > LARGE_BYTES else _nothing():
                image.load()
                reduced = _reduce(image, fmt)
                oriented = _oriented(reduced) if fmt == "JPEG" else reduced
                return _to_rgb(oriented)
    except UnidentifiedImageError:
        raise InvalidImageFormatException(
            f"Request has invalid image format: the bytes start like a {fmt} but are not one"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageFormatException(f"Request has invalid image format: {fmt}: {exc}") from None


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _check_budget(image: Image.Image) -> int:
    """The bytes decoding ``image`` allocates at once; ImageTooLargeException past DECODE_BUDGET."""
    width, height = image.size
    held = width * height * _MODE_BYTES.get(image.mode, 4)
    if held > DECODE_BUDGET:
        raise ImageTooLargeException(
            f"Image is {width}x{height} pixels in mode {image.mode}: decoding it takes {held // 2**20} MB, "
            f"over the limit of {DECODE_BUDGET // 2**20} MB (fewer pixels, 8 bits a channel or no alpha fit more)"
        )
    return held


def _reduce(image: Image.Image, fmt: str) -> Image.Image:
    """An image with a side over MAX_DECODE_SIDE averaged down by a whole factor to fit it, as RGB,
    strip by strip: no full-size copy beside the decoded one (Pillow's own resize of RGBA makes a
    premultiplied copy). Any other image as it is; JPEGs keep what draft mode decoded, as before."""
    side = max(image.size)
    if side <= MAX_DECODE_SIDE or fmt == "JPEG":
        return image
    factor = math.ceil(side / MAX_DECODE_SIDE)
    width, height = image.size
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    top = _sixteen_bit_top(image)
    rows = factor * max(1, (16 * 2**20) // (width * 4 * factor))  # ~16 MB strips, whole blocks
    for y in range(0, height, rows):
        strip = image.crop((0, y, width, min(height, y + rows)))
        rgb = Image.fromarray(_to_rgb(strip, top))
        out.paste(rgb.reduce(factor), (0, y // factor))
    return out


def _check_size(width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidParameterException(
            f"Image is {width}x{height} pixels; the minimum is {MIN_SIDE} pixels on each side"
        )
    if width * height > MAX_PIXELS:
        raise ImageTooLargeException(
            f"Image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
        )


def _oriented(image: Image.Image) -> Image.Image:
    """The JPEG as displayed (EXIF orientation applied); itself, not a copy, when upright."""
    if image.getexif().get(0x0112, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _sixteen_bit_top(image: Image.Image) -> float:
    """The white point of a 16/32-bit grey image (65535 for 16-bit, else 255 unless values exceed it)."""
    if image.mode.startswith("I;16"):
        return 65535.0
    if image.mode == "I":
        extrema = image.getextrema()
        return 65535.0 if float(extrema[1]) > 255 else 255.0  # type: ignore[arg-type]
    return 255.0


def _to_rgb(image: Image.Image, top: float | None = None) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: PIL's convert("L") clips instead of scaling, so scale by hand.
        wide = np.asarray(image, dtype=np.float32)
        top = _sixteen_bit_top(image) if top is None else top
        gray = np.clip(wide * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colour; composite on white as a viewer would see them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
