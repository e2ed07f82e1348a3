"""Image decoding: formats by content, modes, limits, EXIF orientation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support import encode, jpeg, pixel_bomb

from facebank import errors
from facebank.engine.image import decode


def test_png_modes_decode_to_rgb():
    gray = encode(Image.new("L", (100, 90), 77), "PNG")
    assert decode(gray).shape == (90, 100, 3) and decode(gray)[0, 0].tolist() == [77, 77, 77]
    rgba = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    assert decode(encode(rgba, "PNG"))[0, 0].tolist() == [255, 255, 255]  # transparent: composited on white
    wide = Image.fromarray(np.full((100, 100), 65535 // 2, np.uint16))
    assert abs(int(decode(encode(wide, "PNG"))[0, 0, 0]) - 127) <= 1  # 16-bit scaled, not clipped


def test_jpeg_judged_by_content_not_name():
    data = jpeg()
    assert decode(data).shape == (200, 200, 3)
    with pytest.raises(errors.InvalidImageFormatException):
        decode(encode(Image.new("RGB", (200, 200)), "BMP"))


def test_png_is_taken_as_stored_even_with_an_exif_orientation():
    """Rekognition does not correct PNG orientation (botocore's OrientationCorrection doc)."""
    image = Image.new("RGB", (100, 300), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    assert decode(encode(image, "PNG", exif=exif.tobytes())).shape == (300, 100, 3)


def test_exif_orientation_applied():
    image = Image.new("RGB", (300, 100), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode(encode(image, "JPEG", exif=exif)).shape == (300, 100, 3)


def test_limits_checked_on_the_header():
    with pytest.raises(errors.InvalidParameterException):
        decode(jpeg((300, 60)))
    with pytest.raises(errors.ImageTooLargeException):
        decode(pixel_bomb())
