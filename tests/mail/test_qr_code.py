"""The QR code (docs/design.md §13.1): what server/mail/qr.py computes itself (the version, the
codewords and their Reed-Solomon blocks, the placement, the mask's penalty, the PNG) equals what
`qrcode` does, so the symbol is exactly the one `qrcode` draws by itself."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
import qrcode
import qrcode.base
import qrcode.util
from qrcode.constants import ERROR_CORRECT_M

from server.mail.qr import (
    MASK_PATTERNS,
    MODULE_PIXELS,
    QUIET_ZONE_MODULES,
    codewords,
    ec_codewords,
    mask_deltas,
    mask_penalty,
    pack_modules,
    png_from_matrix,
    qr_matrix,
    qr_png,
)

DIGITS = "0123456789"
ALPHANUMERIC = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
URL = DIGITS + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.~:/?#&="
WIDE = "éüßж€日本"  # 2 and 3 bytes in UTF-8
BASE64URL = DIGITS + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"


def _link(rng: random.Random) -> str:
    attempt_id = "".join(rng.choices(BASE64URL, k=22))
    email_half = "".join(rng.choices(BASE64URL, k=43))
    return f"https://auth.example.test/l#attempt_id={attempt_id}&email_half={email_half}"


def _corpus(count: int) -> list[str]:
    """Texts of 1 to 300 characters in numeric, alphanumeric and byte mode, and mixes of them;
    then login links, the empty text, single characters, and longer texts."""
    rng = random.Random(18004)
    texts = []
    for index in range(count):
        length = rng.randint(1, 300)
        kind = index % 4
        if kind == 0:
            texts.append("".join(rng.choices(DIGITS, k=length)))
        elif kind == 1:
            texts.append("".join(rng.choices(ALPHANUMERIC, k=length)))
        elif kind == 2:
            texts.append("".join(rng.choices(URL, k=length)))
        else:  # runs long enough for `qrcode` to switch modes, and a few multi-byte characters
            text = ""
            while len(text) < length:
                alphabet = rng.choice([DIGITS, ALPHANUMERIC, URL, URL + WIDE])
                text += "".join(rng.choices(alphabet, k=rng.randint(1, 30)))
            texts.append(text[:length])
    texts += [_link(rng) for _ in range(4)]  # version 7
    texts += ["", "0", "A", "a", "€", WIDE * 20, "日本" * 60]  # versions 1 and 14
    texts.append("".join(rng.choices(URL + WIDE, k=330)))  # version 15
    return texts


def _reference_png(matrix: Sequence[Sequence[bool]], scale: int = MODULE_PIXELS) -> bytes:
    """A 1-bit greyscale PNG written the plain way, a row of pixels at a time."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    size = len(matrix) * scale
    rows = []
    for row in matrix:
        bits = "".join(("0" if dark else "1") * scale for dark in row)
        bits += "1" * (-len(bits) % 8)
        packed = int(bits, 2).to_bytes(len(bits) // 8, "big")
        rows.extend([b"\x00" + packed] * scale)
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Reference:
    """What `qrcode` does by itself with a text."""

    text: str
    version: int
    matrix: list[list[bool]]
    candidates: list[tuple[int, int]]  # mask 0 to 7: its candidate's modules (packed), penalty


def _reference(text: str, lost_point: Callable[[Sequence[Sequence[bool]]], int]) -> Reference:
    candidates: list[tuple[int, int]] = []

    def recording(modules: Sequence[Sequence[bool]]) -> int:
        penalty = lost_point(modules)
        candidates.append((pack_modules(modules), penalty))
        return penalty

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE_MODULES)
    code.add_data(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qrcode.util, "lost_point", recording)
        code.make(fit=True)
    matrix = [[bool(module) for module in row] for row in code.get_matrix()]
    return Reference(text, code.version, matrix, candidates)


@pytest.fixture(scope="module")
def references() -> Iterator[list[Reference]]:
    lost_point = qrcode.util.lost_point
    yield [_reference(text, lost_point) for text in _corpus(240)]


def test_corpus_covers_several_versions_and_modes(references: list[Reference]) -> None:
    assert {reference.version for reference in references} >= set(range(1, 16))
    assert any(
        reference.version == 7 and "email_half=" in reference.text for reference in references
    )
    modes = set()
    for reference in references:
        code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
        code.add_data(reference.text)
        modes |= {chunk.mode for chunk in code.data_list}
    assert modes == {
        qrcode.util.MODE_NUMBER,
        qrcode.util.MODE_ALPHA_NUM,
        qrcode.util.MODE_8BIT_BYTE,
    }
    chosen = {
        min(range(MASK_PATTERNS), key=lambda mask: reference.candidates[mask][1])
        for reference in references
    }
    assert chosen == set(range(MASK_PATTERNS))


def test_fast_penalty_equals_qrcode_lost_point_for_every_mask(
    references: list[Reference],
) -> None:
    for reference in references:
        size = 4 * reference.version + 17
        assert len(reference.candidates) == MASK_PATTERNS
        first, _ = reference.candidates[0]
        for mask, (modules, penalty) in enumerate(reference.candidates):
            # The candidates scored are the ones `qrcode` builds...
            assert first ^ mask_deltas(reference.version)[mask] == modules, (reference.text, mask)
            # ...and score as `qrcode` scores them.
            assert mask_penalty(modules, size) == penalty, (reference.text, mask)


def test_fast_penalty_equals_qrcode_lost_point_on_any_square() -> None:
    """Squares that no QR symbol holds: every density, and dark shares on the 5 % steps of rule
    4, where floating point decides."""
    rng = random.Random(7)
    for _ in range(150):
        size = rng.randint(11, 45)
        density = rng.choice([0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95])
        square = [[rng.random() < density for _ in range(size)] for _ in range(size)]
        assert mask_penalty(pack_modules(square), size) == qrcode.util.lost_point(square)
    for size in (20, 40, 60):
        for step in range(-10, 11):
            dark = [True] * (size * size // 2 + step * size * size // 20)
            cells = dark + [False] * (size * size - len(dark))
            rng.shuffle(cells)
            square = [cells[row * size : (row + 1) * size] for row in range(size)]
            assert mask_penalty(pack_modules(square), size) == qrcode.util.lost_point(square)


def test_matrix_and_png_are_the_ones_of_qrcode(references: list[Reference]) -> None:
    """The PNG of `qrcode`'s matrix, by `png_from_matrix` and by the plain writer above."""
    for reference in references:
        assert qr_matrix(reference.text) == reference.matrix, reference.text
        png, width = qr_png(reference.text)
        assert png == png_from_matrix(reference.matrix), reference.text
        assert png == _reference_png(reference.matrix), reference.text
        assert width == len(reference.matrix) * MODULE_PIXELS


def test_png_from_matrix_equals_the_plain_writer() -> None:
    rng = random.Random(11)
    for size in (0, 1, 7, 8, 9, 21, 29, 53, 57, 64, 85):
        square = [[rng.random() < 0.5 for _ in range(size)] for _ in range(size)]
        for scale in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12):
            assert png_from_matrix(square, scale=scale) == _reference_png(square, scale)
    with pytest.raises(ValueError, match="square"):
        png_from_matrix([[True, False]])


def _qrcode_codewords(text: str) -> tuple[int, bytes]:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
    code.add_data(text)
    version = code.best_fit()
    return version, bytes(qrcode.util.create_data(version, ERROR_CORRECT_M, code.data_list))


def _qrcode_version(text: str) -> int:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
    code.add_data(text)
    version: int = code.best_fit()
    return version


def test_version_and_codewords_equal_qrcode_at_every_capacity_boundary() -> None:
    """For prefixes of texts in each mode, up to version 16: at each length where `best_fit`
    moves to a larger version, found by bisection, the codewords on both sides are those of
    `util.create_data` (the data fill the capacity or nearly; at version 10 the length fields
    widen, which `best_fit` finds with a second try); the version is compared at every length
    tried on the way."""
    rng = random.Random(18)
    texts = [
        "".join(rng.choices(DIGITS, k=1100)),
        "".join(rng.choices(ALPHANUMERIC, k=660)),
        "".join(rng.choices(URL, k=450)),
        "".join(rng.choices(WIDE, k=200)),
        "".join(  # runs that make segments of each mode
            "".join(
                rng.choices(rng.choice([DIGITS, ALPHANUMERIC, URL + WIDE]), k=rng.randint(1, 40))
            )
            for _ in range(30)
        ),
    ]
    versions: dict[str, int] = {}  # prefix: the version `best_fit` chooses

    def version_of(prefix: str) -> int:
        if prefix not in versions:
            versions[prefix] = _qrcode_version(prefix)
        return versions[prefix]

    for text in texts:
        shorter = 0
        while version_of(text[:shorter]) < version_of(text):
            longer = len(text)  # the version there exceeds the one at `shorter`
            while longer - shorter > 1:
                middle = (shorter + longer) // 2
                if version_of(text[:middle]) > version_of(text[:shorter]):
                    longer = middle
                else:
                    shorter = middle
            for prefix in (text[:shorter], text[:longer]):
                assert codewords(prefix) == _qrcode_codewords(prefix), prefix
            shorter = longer
    for prefix, version in versions.items():
        assert codewords(prefix)[0] == version, prefix
    assert set(versions.values()) >= set(range(1, 17))


def test_too_long_a_text_fails_as_in_qrcode() -> None:
    for text in ("a" * 2332, "1" * 5597):  # a byte or a digit more than version 40 holds at M
        code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
        code.add_data(text)
        with pytest.raises(ValueError, match="Invalid version"):
            code.make(fit=True)
        with pytest.raises(ValueError, match="Invalid version"):
            qr_png(text)
    assert codewords("a" * 2331) == _qrcode_codewords("a" * 2331)


def _qrcode_ec(data: bytes, ec_count: int) -> bytes:
    buffer = qrcode.util.BitBuffer()
    buffer.buffer = list(data)
    block = qrcode.base.RSBlock(len(data) + ec_count, len(data))
    return bytes(qrcode.util.create_bytes(buffer, [block])[len(data) :])


def test_reed_solomon_codewords_equal_qrcode_for_every_ec_block_length() -> None:
    """Every block size of every version and level, lengths outside `qrcode`'s table of
    generator polynomials (which it then multiplies out), and data with leading zeros."""
    blocks = {
        (block.total_count - block.data_count, block.data_count)
        for version in range(1, 41)
        for level in range(4)
        for block in qrcode.base.rs_blocks(version, level)
    }
    assert {ec_count for ec_count, _ in blocks} >= {10, 16, 18, 22, 24, 26, 28, 30}
    blocks |= {(ec_count, 20) for ec_count in (2, 5, 8, 12, 31)}
    rng = random.Random(5)
    for ec_count, data_count in sorted(blocks):
        for data in (
            rng.randbytes(data_count),
            rng.randbytes(data_count),
            bytes(3) + rng.randbytes(data_count - 3),
            bytes(data_count - 1) + b"\x01",
            b"\xff" * data_count,
        ):
            assert ec_codewords(data, ec_count) == _qrcode_ec(data, ec_count), (ec_count, data)


def test_block_of_zero_codewords_is_drawn_where_qrcode_fails() -> None:
    """Version 4 has two blocks; 62 NUL characters fill the second with zero codewords, which
    `qrcode` cannot divide (`glog(0)`). The remainder of zero is zero: the symbol is drawn, and
    with these codewords, `qrcode` places them and chooses the mask as here."""
    text = "\x00" * 62
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE_MODULES)
    code.add_data(text)
    with pytest.raises(ValueError, match="glog"):
        code.make(fit=True)
    version, stream = codewords(text)
    assert version == 4 and len(stream) == 100  # two blocks of 32 data and 18 EC codewords
    first, second = stream[0:64:2], stream[1:64:2]
    assert second == bytes(32) and stream[65::2] == bytes(18)
    assert stream[64::2] == _qrcode_ec(first, 18)
    code.data_cache = list(stream)
    code.make(fit=True)
    assert qr_matrix(text) == [[bool(module) for module in row] for row in code.get_matrix()]
