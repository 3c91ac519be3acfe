"""Properties of the C core that the shared Pager tests cannot see."""

from __future__ import annotations

import random
import re
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from mappedpages import _core_c, _core_py
from mappedpages import format as fmt
from mappedpages._mappedpages_c import lib

FORMAT_H = Path(__file__).resolve().parent.parent / "csrc" / "format.h"


@pytest.fixture
def table_path() -> object:
    """Force the table implementation for the test, then restore the best one."""
    lib.mp_crc32c_select(0)
    yield
    lib.mp_crc32c_select(-1)


def _samples() -> list[bytes]:
    rng = random.Random(7)
    sizes = [*range(0, 40), 255, 256, 767, 768, 769, 4079, 4080, 4081, 4096, 4848, 24575, 24576]
    sizes += [24577, 70001, 1 << 20]
    return [rng.randbytes(n) for n in sizes]


def test_crc_implementations_agree() -> None:
    best = [_core_c._crc32c_cffi(s) for s in _samples()]
    lib.mp_crc32c_select(0)
    try:
        table = [_core_c._crc32c_cffi(s) for s in _samples()]
    finally:
        lib.mp_crc32c_select(-1)
    assert best == table
    # and both agree with the independent pure-Python table code on the smaller samples
    assert [_core_py.crc32c(s) for s in _samples()[:45]] == best[:45]


def test_crc_at_every_alignment_and_split() -> None:
    data = random.Random(3).randbytes(30000)
    mv = memoryview(data)
    for offset in range(9):  # the hardware path steps bytewise up to 8-byte alignment
        assert _core_c.crc32c(mv[offset : offset + 4000]) == _core_py.crc32c(data[offset:][:4000])
    whole = _core_py.crc32c(data[5:29000])
    for cut in (0, 1, 7, 8, 9, 1000, 28994, 28995):
        first = _core_c.crc32c(mv[5 : 5 + cut])
        assert _core_c.crc32c(mv[5 + cut : 29000], first) == whole


def test_crc_of_bytes_skips_cffi_and_agrees() -> None:
    from mappedpages import _crc32c

    assert _core_c.crc32c is _crc32c.crc32c  # the C core's mp.crc32c
    samples = _samples()
    assert [_crc32c.crc32c(s) for s in samples] == [_core_c._crc32c_cffi(s) for s in samples]
    data = samples[-1]
    for crc in (0, 1, 0xFFFFFFFF, 2**31 + 3):
        expected = _core_c._crc32c_cffi(data[:5000], crc)
        assert _crc32c.crc32c(data[:5000], crc) == expected
        assert _crc32c.crc32c(data[:5000], crc=crc) == expected  # keywords: the cffi function
    for crc in (-1, 2**32, 2**70):  # a seed that is no CRC32C: the cffi function's ValueError
        with pytest.raises(ValueError):
            _crc32c.crc32c(data[:5000], crc)
    # other buffers, and whatever is wrong, take the cffi function's path and its errors
    for other in (bytearray(data[:999]), memoryview(data)[3:999], memoryview(data)[::3]):
        assert _crc32c.crc32c(other) == _core_py.crc32c(bytes(other))
    bad = [("text",), (5,), (None,), (b"x", "crc"), (b"x", 1.5), (b"x", True), (), (b"x", 1, 2)]
    for bad_args in bad:
        with pytest.raises(TypeError):
            _crc32c.crc32c(*bad_args)


def test_crc_of_contiguous_buffers_skips_cffi_from_python_3_11() -> None:
    """Where the stable ABI has the buffer protocol, a page's memoryview is checksummed
    directly; a buffer that is not contiguous, and keywords, still take the cffi function."""
    from mappedpages import _crc32c

    calls: list[object] = []

    def spy(*args: Any, **kwargs: Any) -> int:
        calls.append(args[0] if args else kwargs)
        return _core_c._crc32c_cffi(*args, **kwargs)

    data = _samples()[-1]
    _crc32c._set_fallback(spy)
    try:
        direct = [bytearray(data[:999]), memoryview(data)[3:999], memoryview(bytearray(data))]
        for buf in direct:
            assert _crc32c.crc32c(buf, 7) == _core_py.crc32c(bytes(buf), 7)
        assert calls == ([] if sys.version_info >= (3, 11) else direct)
        calls.clear()
        strided = memoryview(data)[::3]
        assert _crc32c.crc32c(strided) == _core_py.crc32c(bytes(strided))
        assert _crc32c.crc32c(b"abc", crc=5) == _core_py.crc32c(b"abc", 5)
        assert calls == [strided, b"abc"]
    finally:
        _crc32c._set_fallback(_core_c._crc32c_cffi)


def test_crc_known_value() -> None:
    assert _core_c.crc32c(b"123456789") == 0xE3069283
    assert lib.mp_crc32c_select(-2) in (0, 1)


# MP_<LAYOUT>_<FIELD> in format.h is the offset of <field> in format.py's struct of that layout
LAYOUTS = {
    "REC": (fmt.RECORD, fmt.Record),
    "BLK": (fmt.BLOCK_HEADER, fmt.BlockHeader),
    "ID": (fmt.IDENTITY, fmt.Identity),
    "TBL": (fmt.TABLE_HEADER, fmt.TableHeader),
    "TSLOT": (fmt.TABLE_SLOT, fmt.TableSlot),
    "UP": (fmt.UPGRADE, fmt.Upgrade),
    "LST": (fmt.LISTED, fmt.Listed),
}


def _offsets(layout: Any, fields: Any) -> dict[str, int]:
    """Each named field's offset in a little-endian struct format (pad bytes named by none)."""
    out, offset, names = {}, 0, iter(fields._fields)
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", layout.format.lstrip("<")):
        n = int(count or 1)
        size = struct.calcsize("<" + code)
        if code == "x":
            offset += n
            continue
        if code == "s":
            out[next(names)] = offset
            offset += n
            continue
        for _ in range(n):
            out[next(names)] = offset
            offset += size
    return out


def test_every_format_constant_matches_the_python_module() -> None:
    """Every #define MP_* of csrc/format.h: MP_X is format.X, MP_<LAYOUT>_<FIELD> the offset
    of that field in format.py's layout. None is skipped: a new constant must have its twin."""
    defines = re.findall(r"^#define (MP_\w+) (.+)$", FORMAT_H.read_text(), re.M)
    assert len(defines) > 80
    offsets = {prefix: _offsets(*layout) for prefix, layout in LAYOUTS.items()}
    for name, value in defines:
        value = value.split("/*")[0].strip()
        bare = name.removeprefix("MP_")
        prefix, _, field = bare.partition("_")
        if prefix in offsets and field.lower() in offsets[prefix]:
            assert int(value) == offsets[prefix][field.lower()], name
        elif value.startswith('"'):
            assert value == f'"{getattr(fmt, bare).decode()}"', name
        else:
            number = eval(re.sub(r"(?<=\d)(ull|u)\b", "", value))  # C literals
            assert number == getattr(fmt, bare), name


def test_crc_accepts_what_the_pure_core_accepts() -> None:
    import array

    arr = array.array("I", range(100))
    assert _core_c.crc32c(arr) == _core_py.crc32c(arr)
    strided = memoryview(bytes(range(200)))[::2]
    assert _core_c.crc32c(strided) == _core_py.crc32c(bytes(strided))
    with pytest.raises(TypeError):
        _core_c.crc32c("text")
    with pytest.raises(TypeError):
        _core_py.crc32c("text")
