"""The QR code of a login link, as a PNG for the HTML part of the mail.

The symbol is exactly the one of `qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=4)` with
`add_data(text)` and `make(fit=True)`, but most of it is computed here. The dispatcher renders
every mail just before it sends it, and under a login load the QR code was about 70 % of the
dispatcher's CPU. Measured on 116-character login links (version 7), `qr_png` took 2.2 ms (median),
nearly all of it `qrcode`'s pure Python: Reed-Solomon with its `Polynomial` class (0.6 ms), the
placement of every module, twice (0.3 ms each), bit buffers written a bit at a time, and the rows
of the PNG. It now takes 0.36 ms, of which zlib's compression is about 0.17 ms. What is taken from
`qrcode` once per version is kept for the life of the process (at most 40 versions): 14 ms at the
first use of version 7, 0.3 s at that of version 40.

From `qrcode`, per text: the split of the text into numeric, alphanumeric and byte segments
(`add_data`), and the bits of each segment (`QRData.write`, here into a buffer that holds them in
one integer). From `qrcode`, once per version: its tables (bit limits, widths of the length fields,
Reed-Solomon blocks, generator polynomials, GF(256)), and its placement. `makeImpl` run on probe
codewords shows which module each bit of the codewords goes to; run on empty data, it gives the
function patterns, the format and version information and each mask, both as drawn in the
finished symbol and as scored for the choice of the mask.

Here, per text: the version (the rule of `QRCode.best_fit`); the terminator and the padding of the
data (as `util.create_data`); the error-correction codewords, a remainder over GF(256) computed a
byte at a time from a table per EC length, and their interleaving (as `util.create_bytes`); the
placement, one permutation of the bits of the codewords, and the chosen mask, one XOR with the
symbol of empty data under that mask; the mask's choice (below); and the PNG.

tests/mail/test_qr_code.py proves the equality with `qrcode`: the version and the codewords of
texts at every capacity boundary up to version 16, the error-correction codewords of every block
size of every version, the error of a text too long for version 40, and the matrix and the PNG
bytes of a corpus of texts of versions 1 to 15, in every mode, against the matrix of `qrcode`'s own
`make(fit=True)` and `get_matrix()`, and its PNG. In one case `qrcode` gives no symbol at all: a
block whose data codewords are all zero (texts of NUL characters) makes it fail (`ValueError:
glog(0)` in `Polynomial.__mod__`). That block's EC codewords are zero here, as the code requires,
and the symbol is drawn.

The mask is the one with the lowest penalty (ISO/IEC 18004 §7.8.3), exactly the one `qrcode`
itself picks, but the penalty is computed here. `qrcode` builds all 8 candidates and scores them
module by module in Python (measured on a 90-character link, version 6, that was 6.6 of the 7.7 ms
that `qr_png` took then). Every candidate differs from the candidate of mask 0 by modules that
depend on the version alone (taken once per version from `qrcode`'s own placement), and each
candidate is one integer, a bit per module, whose four penalty rules are a few shifts, ANDs and
popcounts over all rows and columns at once (about 8 µs a candidate).

The PNG is written here, 1 bit per pixel, so the bytes depend on the text alone: a message
rendered twice is byte-identical, and no imaging library is needed.
"""

from __future__ import annotations

import functools
import struct
import zlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter

import qrcode
from qrcode import LUT, base, util
from qrcode.constants import ERROR_CORRECT_M

MODULE_PIXELS = 6
QUIET_ZONE_MODULES = 4  # ISO/IEC 18004 §7.3.8
# zlib's default level. Measured on the PNG of a login link (318 x 318 pixels, 13 kB of rows):
# level 9 took 0.32 ms and gave 668 bytes, level 6 takes 0.10 ms and gives 664. Over links of 116
# to 266 characters the PNG at level 6 was between 1 % smaller and 2 % larger than at level 9.
_DEFLATE_LEVEL = 6

MASK_PATTERNS = 8
_BIT_CHARS = bytes.maketrans(b"\x00\x01", b"01")
_PAD_CODEWORDS = bytes((util.PAD0, util.PAD1))  # filling the data capacity, alternately


def qr_matrix(text: str) -> list[list[bool]]:
    """Dark modules are True; the quiet zone is included.

    The same matrix as `get_matrix()` of `QRCode(error_correction=ERROR_CORRECT_M, border=4)`
    after `add_data(text)` and `make(fit=True)`.
    """
    version, modules = qr_symbol(text)
    size = 4 * version + 17
    width = size + 2 * QUIET_ZONE_MODULES
    bits = format(modules, f"0{size * size}b")[::-1]  # row by row
    side = [False] * QUIET_ZONE_MODULES
    matrix = [[False] * width for _ in range(QUIET_ZONE_MODULES)]
    for start in range(0, size * size, size):
        matrix.append(side + [bit == "1" for bit in bits[start : start + size]] + side)
    matrix.extend([False] * width for _ in range(QUIET_ZONE_MODULES))
    return matrix


def qr_symbol(text: str) -> tuple[int, int]:
    """The version and the modules (as `pack_modules` packs them, without the quiet zone)."""
    version, stream = codewords(text)
    placement = _placement(version)
    bits = format(int.from_bytes(stream, "big"), f"0{placement.stream_bits}b") + "0"
    dark = int("".join(placement.place(bits)), 2)  # the modules that the codewords make dark
    mask = best_mask(version, placement.candidate_0 ^ dark)
    return version, placement.symbols[mask] ^ dark


def codewords(text: str) -> tuple[int, bytes]:
    """The version `qrcode` fits the text in, and its codewords in the order they are placed.

    The same as `util.create_data(version, ERROR_CORRECT_M, code.data_list)` after
    `code.add_data(text)` and `code.best_fit()`.
    """
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
    code.add_data(text)
    segments = []
    for chunk in code.data_list:
        bits = _Bits()
        chunk.write(bits)
        segments.append((chunk.mode, len(chunk), bits))
    version = _fit([(mode, bits.length) for mode, _, bits in segments])
    # The data, as `util.create_data` writes it: each segment's mode, length and bits, ...
    widths = util.mode_sizes_for_version(version)
    stream = length = 0
    for mode, count, bits in segments:
        width = widths[mode]
        stream = (stream << 4) | mode
        stream = (stream << width) | (count & ((1 << width) - 1))
        stream = (stream << bits.length) | bits.value
        length += 4 + width + bits.length
    # ... a terminator of up to 4 zero bits, zero bits up to a whole byte, and the pad codewords.
    blocks = _blocks(version)
    capacity = 8 * blocks.data_codewords
    zeros = min(capacity - length, 4)
    zeros += -(length + zeros) % 8
    length += zeros
    fill = (capacity - length) // 8
    data = (stream << zeros).to_bytes(length // 8, "big")
    data += (_PAD_CODEWORDS * (fill // 2 + 1))[:fill]
    # Each block's error-correction codewords, after the data of all blocks.
    ec = []
    start = 0
    for data_count, ec_count in blocks.sizes:
        ec.append(ec_codewords(data[start : start + data_count], ec_count))
        start += data_count
    return version, bytes(blocks.interleave(data + b"".join(ec)))


class _Bits:
    """A bit buffer for `QRData.write`: its bits in one integer, the first one highest."""

    __slots__ = ("length", "value")

    def __init__(self) -> None:
        self.value = 0
        self.length = 0

    def put(self, num: int, length: int) -> None:
        # The `length` lowest bits of `num`, as `util.BitBuffer.put` writes them.
        self.value = (self.value << length) | (num & ((1 << length) - 1))
        self.length += length


def _fit(segments: Sequence[tuple[int, int]]) -> int:
    """The version `QRCode.best_fit` chooses for segments of these modes and numbers of bits.

    The smallest version whose data capacity holds them, each with its mode and length, the length
    fields as wide as in version 1; if they are wider in the version found, again from there, with
    the widths of that version.
    """
    limits = util.BIT_LIMIT_TABLE[ERROR_CORRECT_M]
    start = 1
    while True:
        widths = util.mode_sizes_for_version(start)
        needed = sum(4 + widths[mode] + bits for mode, bits in segments)
        version: int = bisect_left(limits, needed, start)
        # Beyond version 40, `best_fit` fails when it sets the version (in `util.check_version`),
        # with a ValueError, before it could raise its DataOverflowError.
        util.check_version(version)
        if util.mode_sizes_for_version(version) is widths:
            return version
        start = version


def ec_codewords(data: bytes, ec_count: int) -> bytes:
    """The error-correction codewords of a block of data codewords.

    The remainder of data(x) x^ec_count divided by `qrcode`'s generator polynomial, computed a
    codeword at a time: the remainder so far is one integer (its first coefficient in the highest
    byte), and the multiple of the generator to subtract (XOR) is looked up in a table.
    """
    table = _remainder_table(ec_count)
    top = 8 * (ec_count - 1)
    every = (1 << 8 * ec_count) - 1
    remainder = 0
    for codeword in data:
        remainder = ((remainder << 8) & every) ^ table[(remainder >> top) ^ codeword]
    return remainder.to_bytes(ec_count, "big")


@functools.cache
def _remainder_table(ec_count: int) -> tuple[int, ...]:
    """For each factor, the generator's coefficients after the first times the factor, in one
    integer (the first coefficient in the highest byte)."""
    generator = _generator(ec_count)
    if len(generator) != ec_count + 1 or generator[0] != 1:
        raise ValueError(f"not a monic polynomial of degree {ec_count}: {generator}")
    table = []
    for factor in range(256):
        row = 0
        for coefficient in generator[1:]:
            row = (row << 8) | _gf_multiply(factor, coefficient)
        table.append(row)
    return tuple(table)


def _generator(ec_count: int) -> list[int]:
    """The generator polynomial, first coefficient first, as `util.create_bytes` takes it."""
    if ec_count in LUT.rsPoly_LUT:
        return list(LUT.rsPoly_LUT[ec_count])
    polynomial = base.Polynomial([1], 0)
    for i in range(ec_count):
        polynomial = polynomial * base.Polynomial([1, base.gexp(i)], 0)
    return list(polynomial)


def _gf_multiply(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    product: int = base.gexp(base.glog(a) + base.glog(b))
    return product


@dataclass(frozen=True, slots=True)
class _Blocks:
    """The Reed-Solomon blocks of a version (at level M), from `base.rs_blocks`."""

    sizes: tuple[tuple[int, int], ...]  # data and error-correction codewords of each block
    data_codewords: int
    # From the data of all blocks, then their error-correction codewords, block after block, to
    # the order of `util.create_bytes`: the first data codeword of every block, then the second,
    # and so on (shorter blocks skipped), then the error-correction codewords in the same way.
    interleave: Callable[[bytes], tuple[int, ...]]


@functools.cache
def _blocks(version: int) -> _Blocks:
    sizes = tuple(
        (block.data_count, block.total_count - block.data_count)
        for block in base.rs_blocks(version, ERROR_CORRECT_M)
    )
    data_codewords = sum(data_count for data_count, _ in sizes)
    order: list[int] = []
    first = 0  # where the data of the first block is, then its error-correction codewords
    for counts in ([data for data, _ in sizes], [ec for _, ec in sizes]):
        starts = list(accumulate(counts, initial=first))
        first = starts.pop()
        for i in range(max(counts)):
            order += [start + i for start, count in zip(starts, counts, strict=True) if i < count]
    return _Blocks(sizes, data_codewords, itemgetter(*order))


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where `qrcode` places the codewords of a version, and its symbols of empty data."""

    stream_bits: int  # the bits of all codewords
    # From the bits of the codewords, as '0' and '1', and one '0' after them: the modules, as
    # characters, the last module first (so that `int(..., 2)` packs them as `pack_modules`),
    # each a bit of the codewords or, where no bit is placed, that '0'.
    place: Callable[[str], tuple[str, ...]]
    candidate_0: int  # `makeImpl(True, 0)` for empty data: the candidate of mask 0
    symbols: tuple[int, ...]  # for each mask, `makeImpl(False, mask)` for empty data


@functools.cache
def _placement(version: int) -> _Placement:
    """Taken from `qrcode`'s own placement of probe codewords.

    With empty data (`data_cache = []`), `qrcode` places light modules only, and then masks them;
    with codewords, it places the same modules, dark where a bit is 1, and masks them the same
    way. So the symbol of any codewords is the one of empty data, XOR the modules of their 1 bits.
    Which module a bit goes to is read off probes: in the probe j, bit k of the codewords is bit j
    of k, so that each module spells out, over the probes, the index of its bit.
    """
    size = 4 * version + 17
    modules = size * size
    count = sum(data_count + ec_count for data_count, ec_count in _blocks(version).sizes)
    stream_bits = 8 * count
    probe = qrcode.QRCode(version=version, error_correction=ERROR_CORRECT_M)

    def symbol(data: bytes, test: bool, mask: int) -> int:
        probe.data_cache = list(data)
        probe.makeImpl(test, mask)
        return pack_modules(probe.modules)

    empty = symbol(b"", True, 0)

    def dark(bits: str) -> str:
        """The modules that these bits of the codewords make dark: a '1' or '0' per module, in
        the order of `pack_modules` (row by row)."""
        placed = symbol(int(bits, 2).to_bytes(count, "big"), True, 0) ^ empty
        return format(placed, f"0{modules}b")[::-1]

    carriers = dark("1" * stream_bits)
    index = [0 if carrier == "1" else stream_bits for carrier in carriers]
    for j in range((stream_bits - 1).bit_length()):
        probe_bits = "".join("1" if k >> j & 1 else "0" for k in range(stream_bits))
        for module, placed in enumerate(dark(probe_bits)):
            if placed == "1":
                index[module] |= 1 << j
    if sorted(index) != [*range(stream_bits), *[stream_bits] * (modules - stream_bits)]:
        raise ValueError(f"codewords of version {version} not placed one bit per module")
    return _Placement(
        stream_bits=stream_bits,
        place=itemgetter(*reversed(index)),
        candidate_0=empty,
        symbols=tuple(symbol(b"", False, mask) for mask in range(MASK_PATTERNS)),
    )


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
    """A 1-bit greyscale PNG of a square: black dark modules on white, `scale` pixels per module."""
    size = len(matrix)
    if any(len(row) != size for row in matrix):
        raise ValueError("the matrix is not a square")
    pad = "0" * (-size % 8)
    bits = "".join(["".join(["1" if dark else "0" for dark in row]) + pad for row in matrix])
    return _png(int(bits or "0", 2).to_bytes(len(bits) // 8, "big"), size, scale)


def _png(modules: bytes, size: int, scale: int) -> bytes:
    """`png_from_matrix` of a square of `size` modules, given a bit per module (1 dark, the first
    module of a row in the highest bit of its first byte), each row padded with 0s to whole bytes.
    """
    expand = _pixels(scale)
    # A byte of modules is `scale` bytes of pixels, and a row of pixels holds whole bytes, padded
    # with white: the first `line` bytes of its modules' pixels, the padding modules being light.
    pixels = b"".join(map(expand.__getitem__, modules))
    step = (size + 7) // 8 * scale
    line = (size * scale + 7) // 8
    rows = b"".join(  # filter type 0 (None) on every line
        [(b"\x00" + pixels[row * step : row * step + line]) * scale for row in range(size)]
    )
    header = struct.pack(">IIBBBBB", size * scale, size * scale, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, _DEFLATE_LEVEL))
        + _chunk(b"IEND", b"")
    )


@functools.cache
def _pixels(scale: int) -> tuple[bytes, ...]:
    """For each byte of 8 modules, its pixels: `scale` 0 bits (black) for a dark module, 1 bits
    (white) for a light one."""
    dark, light = "0" * scale, "1" * scale
    table = []
    for byte in range(256):
        bits = "".join(dark if byte >> (7 - i) & 1 else light for i in range(8))
        table.append(int(bits, 2).to_bytes(scale, "big"))
    return tuple(table)


def qr_png(text: str) -> tuple[bytes, int]:
    """The PNG and its width (= height) in pixels."""
    version, modules = qr_symbol(text)
    size = 4 * version + 17
    width = size + 2 * QUIET_ZONE_MODULES
    # The rows of modules with the quiet zone, each padded with light modules to whole bytes.
    quiet = "0" * QUIET_ZONE_MODULES
    right = quiet + "0" * (-width % 8)
    blank = (quiet + "0" * size + right) * QUIET_ZONE_MODULES
    bits = format(modules, f"0{size * size}b")[::-1]
    rows = blank + "".join(
        [quiet + bits[start : start + size] + right for start in range(0, size * size, size)]
    )
    rows += blank
    png = _png(int(rows, 2).to_bytes(len(rows) // 8, "big"), width, MODULE_PIXELS)
    return png, width * MODULE_PIXELS
