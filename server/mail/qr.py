"""The QR code of a login link, as a PNG for the HTML part of the mail.

`qrcode` encodes the text (error correction level M), computes the Reed-Solomon blocks and places
the modules. The PNG is written here, 1 bit per pixel, so the bytes depend on the text alone: a
message rendered twice is byte-identical, and no imaging library is needed.

The mask is the one with the lowest penalty (ISO/IEC 18004 §7.8.3), exactly the one `qrcode`
itself picks, but the penalty is computed here. `qrcode` builds all 8 candidates and scores them
module by module in Python: measured on a 90-character link (version 6), that was about 6.6 of
the 7.7 ms that `qr_png` took. Here `qrcode` places the data once, as the candidate of mask 0;
every other candidate differs from it by modules that depend on the version alone (taken once
per version from `qrcode`'s own placement), and each candidate is one integer, a bit per module,
whose four penalty rules are a few shifts, ANDs and popcounts over all rows and columns at once
(about 8 µs a candidate). `qrcode` then builds the symbol with the chosen mask, and `qr_png` takes
about 1.9 ms, most of it `qrcode`'s encoding and placement; the PNG's compression, at zlib's
default level, about 0.1 ms of it.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import qrcode
from qrcode.constants import ERROR_CORRECT_M

MODULE_PIXELS = 6
QUIET_ZONE_MODULES = 4  # ISO/IEC 18004 §7.3.8
# zlib's default level. Measured on the PNG of a login link (318 x 318 pixels, 13 kB of rows):
# level 9 took 0.32 ms and gave 668 bytes, level 6 takes 0.10 ms and gives 664. Over links of 116
# to 266 characters the PNG at level 6 was between 1 % smaller and 2 % larger than at level 9.
_DEFLATE_LEVEL = 6

MASK_PATTERNS = 8
_BIT_CHARS = bytes.maketrans(b"\x00\x01", b"01")


def qr_matrix(text: str) -> list[list[bool]]:
    """Dark modules are True; the quiet zone is included.

    The same symbol as `QRCode(error_correction=ERROR_CORRECT_M, border=4)` with `make(fit=True)`:
    the steps of `make`, with the mask chosen by `best_mask` instead of `best_mask_pattern`.
    """
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE_MODULES)
    code.add_data(text)
    code.best_fit()
    code.makeImpl(True, 0)  # the candidate for mask 0, as `best_mask_pattern` builds it
    code.makeImpl(False, best_mask(code.version, pack_modules(code.modules)))
    return [[bool(module) for module in row] for row in code.get_matrix()]


def pack_modules(modules: Sequence[Sequence[bool]]) -> int:
    """A square of modules as one integer: the module of row r, column c is bit r * size + c."""
    rows = b"".join([bytes(row) for row in modules])
    return int(rows.translate(_BIT_CHARS)[::-1], 2)


def best_mask(version: int, candidate_0: int) -> int:
    """The mask `qrcode` would choose, given its mask-0 candidate (`makeImpl(True, 0)`, packed).

    Among equal penalties the lowest mask wins, as in `QRCode.best_mask_pattern`.
    """
    size = 4 * version + 17
    penalties = [mask_penalty(candidate_0 ^ delta, size) for delta in mask_deltas(version)]
    return penalties.index(min(penalties))


@functools.cache
def mask_deltas(version: int) -> tuple[int, ...]:
    """For each mask, the modules in which its candidate differs from the candidate of mask 0.

    Taken from `qrcode`'s own placement: with an empty data stream every data module is light
    before masking, so each candidate holds the function patterns and its mask over the data
    region. A mask flips data modules whatever their bits, so the candidates of any data differ
    from one another in these same modules.
    """
    probe = qrcode.QRCode(version=version, error_correction=ERROR_CORRECT_M)
    probe.data_cache = []  # `map_data` places light modules only
    candidates = []
    for mask in range(MASK_PATTERNS):
        probe.makeImpl(True, mask)
        candidates.append(pack_modules(probe.modules))
    return tuple(candidate ^ candidates[0] for candidate in candidates)


@dataclass(frozen=True, slots=True)
class _Windows:
    """Where a window of modules fits in a square of `size`, in the bit layout of `pack_modules`."""

    every: int  # all modules
    across_2: int  # the module and the next one in its row
    across_11: int
    down_2: int  # the module and the one below it
    down_11: int


@functools.cache
def _windows(size: int) -> _Windows:
    def across(width: int) -> int:
        starts = (1 << (size - width + 1)) - 1
        return sum(starts << (row * size) for row in range(size))

    def down(height: int) -> int:
        return (1 << ((size - height + 1) * size)) - 1

    return _Windows(
        every=(1 << (size * size)) - 1,
        across_2=across(2),
        across_11=across(11),
        down_2=down(2),
        down_11=down(11),
    )


def mask_penalty(modules: int, size: int) -> int:
    """The penalty of a candidate (packed), equal to `qrcode.util.lost_point` on its modules.

    `qrcode` scores candidates whose format and version information, and the dark module, are
    all light (`makeImpl(True, mask)` in `best_mask_pattern`), not the finished symbol with them
    drawn; the candidates given here are those same ones.
    """
    w = _windows(size)
    light = modules ^ w.every
    # Pairs of neighbours of the same colour, marked at the first of the two. Nothing is marked
    # in the last column (row), so no run or block counted below crosses into the next row
    # (column); rule 3 keeps to the windows that fit (`across_11`, `down_11`).
    same_across = ~(modules ^ (modules >> 1)) & w.across_2
    same_down = ~(modules ^ (modules >> size)) & w.down_2
    # Rule 1: a run of n >= 5 modules of one colour in a row or column scores n - 2 (3 + n - 5).
    # A run of n >= 5 holds n - 4 windows of 5 and n - 5 windows of 6, and 3(n-4) - 2(n-5) = n - 2.
    penalty = _runs(same_across, 1) + _runs(same_down, size)
    # Rule 2: 3 for every 2x2 block of one colour, overlapping blocks each counted (the standard's
    # 3 (m-1) (n-1) for an m x n block).
    blocks = same_across & (same_across >> size) & same_down
    penalty += 3 * blocks.bit_count()
    # Rule 3: 40 for every 11-module window, in a row or column, reading 1011101 0000 or
    # 0000 1011101. Where the standard's text speaks of a 1:1:3:1:1 pattern preceded or followed
    # by 4 light modules, `qrcode` (util._lost_point_level3) matches only these two windows inside
    # the symbol: the quiet zone does not count as light, and a 1011101 with 4 light modules on
    # both sides scores twice.
    penalty += 40 * (
        _finders(modules, light, 1, w.across_11) + _finders(modules, light, size, w.down_11)
    )
    # Rule 4: 10 for every full 5 % that the dark share departs from 50 %, in floating point as in
    # util._lost_point_level4, so that the boundaries round the same way.
    percent = float(modules.bit_count()) / (size**2)
    penalty += int(abs(percent * 100 - 50) / 5) * 10
    return penalty


def _runs(same: int, step: int) -> int:
    """Rule 1 along one direction, `same` marking neighbours of one colour `step` bits apart."""
    two = same & (same >> step)
    five = two & (two >> 2 * step)  # 5 modules of one colour from here on
    six = five & (same >> 4 * step)
    return 3 * five.bit_count() - 2 * six.bit_count()


def _finders(dark: int, light: int, step: int, starts: int) -> int:
    """Rule 3 along one direction: windows, starting where `starts` allows, of either pattern."""
    light_2 = light & (light >> step)
    light_4 = light_2 & (light_2 >> 2 * step)
    core = (  # 1011101 from here on
        dark
        & (light >> step)
        & (dark >> 2 * step)
        & (dark >> 3 * step)
        & (dark >> 4 * step)
        & (light >> 5 * step)
        & (dark >> 6 * step)
    )
    before = core & (light_4 >> 7 * step) & starts  # 1011101 0000
    after = light_4 & (core >> 4 * step) & starts  # 0000 1011101
    return before.bit_count() + after.bit_count()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_from_matrix(matrix: list[list[bool]], *, scale: int = MODULE_PIXELS) -> bytes:
    """A 1-bit greyscale PNG: black dark modules on white, `scale` pixels per module."""
    size = len(matrix) * scale
    rows = []
    for row in matrix:
        bits = "".join(("0" if dark else "1") * scale for dark in row)
        bits += "1" * (-len(bits) % 8)
        packed = int(bits, 2).to_bytes(len(bits) // 8, "big")
        rows.extend([b"\x00" + packed] * scale)  # filter type 0 (None) on every line
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), _DEFLATE_LEVEL))
        + _chunk(b"IEND", b"")
    )


def qr_png(text: str) -> tuple[bytes, int]:
    """The PNG and its width (= height) in pixels."""
    matrix = qr_matrix(text)
    return png_from_matrix(matrix), len(matrix) * MODULE_PIXELS
