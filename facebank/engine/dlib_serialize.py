"""Reading dlib's ``serialize`` format (``dlib/serialize.h``) in plain Python and numpy.

Shared by the converters of dlib's face ResNet (``dlib_convert``) and 5-point shape predictor
(``dlib_shape``): integers are packed (a control byte, then little-endian magnitude), floats are
an int64 mantissa and int16 exponent, bools ASCII '0'/'1', matrices -rows, -cols then elements.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

# Reader's methods are named after what they read (int, float, bool), which shadows those builtins in
# its class body: annotations there spell them builtins.int etc.


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int(self) -> int:
        # pack_int: control byte (0x80 = negative, low nibble = byte count), then little-endian magnitude.
        control = self.byte()
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise ValueError(f"bad integer control byte {control:#x} at {self.pos - 1}")
        value = int.from_bytes(self.data[self.pos : self.pos + size], "little")
        self.pos += size
        return -value if control & 0x80 else value

    def float(self) -> float:
        # float_details: int64 mantissa and int16 exponent, value = mantissa * 2**exponent.
        if self.data[self.pos] & 0x70:
            raise ValueError(f"old ASCII float encoding at {self.pos} is not supported")
        mantissa, exponent = self.int(), self.int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        char = self.byte()  # serialize(bool) writes the ASCII character '0' or '1'
        if char not in (0x30, 0x31):
            raise ValueError(f"bad bool byte {char:#x} at {self.pos - 1}")
        return char == 0x31

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos : self.pos + size].decode("ascii")
        self.pos += size
        return text

    def expect_int(self, value: builtins.int, what: str) -> None:
        got = self.int()
        if got != value:
            raise ValueError(f"{what}: expected {value}, found {got} at {self.pos}")

    def shape(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        return self.int(), self.int(), self.int(), self.int()

    def tensor(self) -> np.ndarray:
        version = self.int()
        shape = self.shape()
        count = math.prod(shape)
        if version == 2:  # raw little-endian float32
            end = self.pos + 4 * count
            values = np.frombuffer(self.data[self.pos : end], dtype="<f4").astype(np.float32)
            self.pos = end
        elif version == 1:  # every element in the float_details encoding
            values = np.array([self.float() for _ in range(count)], dtype=np.float32)
        else:
            raise ValueError(f"unknown tensor version {version}")
        return values.reshape(shape)

    def alias(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        self.expect_int(1, "alias_tensor version")
        return self.shape()

    def float_matrix(self) -> np.ndarray:
        """``matrix<float>``: dimensions stored negated (dlib's current format), then every element."""
        rows, cols = abs(self.int()), abs(self.int())
        return np.array([self.float() for _ in range(rows * cols)], np.float32).reshape(rows, cols)
