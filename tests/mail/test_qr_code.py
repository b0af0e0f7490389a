"""The QR code of a login link (docs/design.md §13.1): read back by an independent decoder, it is
exactly the link, at error-correction level M, a 1-bit greyscale PNG of 6 pixels per module with
a quiet zone of 4, and the same link always gives the same bytes."""

from __future__ import annotations

import random

import pytest
from support.qr_decode import decode_qr, read_pixels

from server.mail.qr_image import MODULE_PIXELS, QUIET_ZONE_MODULES, qr_png

BASE64URL = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"


def _link(rng: random.Random, public_url: str = "https://auth.example.test") -> str:
    attempt_id = "".join(rng.choices(BASE64URL, k=22))
    email_half = "".join(rng.choices(BASE64URL, k=43))
    return f"{public_url}/l#attempt_id={attempt_id}&email_half={email_half}"


_RNG = random.Random(18004)
LINKS = [
    _link(_RNG),
    _link(_RNG),
    _link(_RNG, "https://login.xn--bcher-kva.example:8443/accounts/sign-in"),
    _link(_RNG, "https://a.example/" + "very-long-path/" * 12),
    "https://a.example/l",  # small enough that a higher level would fit the same size
    "HTTPS://AUTH.EXAMPLE.TEST/L",  # alphanumeric mode
    "caf\u00e9 \u65e5\u672c",  # other modes than bytes of ASCII
    "\x00" * 62,  # a block of zero data codewords, whose error correction is zero too
]


@pytest.mark.parametrize("link", LINKS)
def test_the_qr_code_decodes_to_exactly_the_link_at_level_m(link: str) -> None:
    decoded = decode_qr(qr_png(link).png)
    assert decoded.text == link
    assert decoded.ec_level == "M"


@pytest.mark.parametrize("link", LINKS)
def test_the_png_has_six_pixels_a_module_and_a_quiet_zone_of_four(link: str) -> None:
    image = qr_png(link)
    pixels = read_pixels(image.png)
    version = int(str(decode_qr(image.png).extra["Version"]))
    modules = 4 * version + 17 + 2 * QUIET_ZONE_MODULES
    assert pixels.width == pixels.height == image.width == modules * MODULE_PIXELS
    quiet = QUIET_ZONE_MODULES * MODULE_PIXELS
    for y, row in enumerate(pixels.rows):
        in_quiet_zone = y < quiet or y >= pixels.height - quiet
        assert not any(row[:quiet]) and not any(row[-quiet:])
        assert not (in_quiet_zone and any(row))
        # Each module is a square of one colour.
        assert all(
            len(set(row[x : x + MODULE_PIXELS])) == 1 for x in range(0, len(row), MODULE_PIXELS)
        )
        if y % MODULE_PIXELS:
            assert row == pixels.rows[y - 1]
    # The top-left finder pattern's corner is dark.
    assert pixels.rows[quiet][quiet]


def test_the_same_link_always_gives_the_same_bytes() -> None:
    for link in LINKS:
        assert qr_png(link) == qr_png(link)


def test_a_text_too_long_for_any_qr_code_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        qr_png("a" * 2332)  # a byte more than version 40 holds at level M
    assert decode_qr(qr_png("a" * 2331).png).text == "a" * 2331
