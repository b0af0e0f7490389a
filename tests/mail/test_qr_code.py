"""The QR code's mask (SPEC.md §7.3): the penalty computed in server/mail/qr.py is the one of
`qrcode`, so the symbol is exactly the one `qrcode` draws by itself."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
import qrcode
import qrcode.util
from qrcode.constants import ERROR_CORRECT_M

from server.mail.qr import (
    MASK_PATTERNS,
    QUIET_ZONE_MODULES,
    mask_deltas,
    mask_penalty,
    pack_modules,
    qr_matrix,
)

DIGITS = "0123456789"
ALPHANUMERIC = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
URL = DIGITS + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.~:/?#&="
WIDE = "éüßж€日本"  # 2 and 3 bytes in UTF-8


def _corpus(count: int) -> list[str]:
    """Texts of 1 to 300 characters in numeric, alphanumeric and byte mode, and mixes of them."""
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
    return texts


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
    assert len({reference.version for reference in references}) >= 10
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


def test_chosen_matrix_is_the_one_qrcode_chooses(references: list[Reference]) -> None:
    for reference in references:
        assert qr_matrix(reference.text) == reference.matrix, reference.text
