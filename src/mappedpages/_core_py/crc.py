"""CRC32C in pure Python (table-driven, a byte at a time): the pure core's checksum."""

from __future__ import annotations

from typing import Any

_TABLE: list[int] = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 & -(_c & 1))
    _TABLE.append(_c)
del _n, _c


def check_seed(crc: object) -> int:
    """The ``crc`` a checksum continues from: a CRC32C, an int in [0, 2**32)."""
    if type(crc) is not int:
        if isinstance(crc, bool) or not isinstance(crc, int):
            raise TypeError(f"crc must be an int, not {type(crc).__name__}")
        crc = int(crc)
    if not 0 <= crc <= 0xFFFFFFFF:
        raise ValueError(f"crc must be a CRC32C, 0 <= crc < 2**32, not {crc}")
    return crc


def crc32c(data: Any, crc: int = 0) -> int:
    """CRC32C of any buffer, continuing from ``crc``."""
    if isinstance(data, str):
        raise TypeError("crc32c needs a bytes-like object, not str")
    crc = check_seed(crc)
    raw = data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()
    c = crc ^ 0xFFFFFFFF
    table = _TABLE
    for b in raw:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
