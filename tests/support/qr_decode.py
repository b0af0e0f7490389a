"""QR codes read back from their PNG bytes by independent decoders: pypng for the image,
zxing-cpp for the symbol."""

from __future__ import annotations

from dataclasses import dataclass

import png
import zxingcpp


@dataclass(frozen=True)
class Pixels:
    """A 1-bit greyscale image: True is dark."""

    width: int
    height: int
    rows: list[list[bool]]


@dataclass(frozen=True)
class DecodedQr:
    text: str
    ec_level: str
    extra: dict[str, object]


def read_pixels(data: bytes) -> Pixels:
    width, height, rows, info = png.Reader(bytes=data).read()
    assert info["greyscale"] and info["bitdepth"] == 1 and not info["alpha"]
    return Pixels(width, height, [[value == 0 for value in row] for row in rows])


def decode_qr(data: bytes) -> DecodedQr:
    """The one QR code in a PNG."""
    pixels = read_pixels(data)
    grey = bytes(0 if dark else 255 for row in pixels.rows for dark in row)
    image = memoryview(grey).cast("B", (pixels.height, pixels.width))
    # Plain: the text as encoded, control characters included, not a readable rendering of it.
    (found,) = zxingcpp.read_barcodes(
        image, formats=zxingcpp.BarcodeFormat.QRCode, text_mode=zxingcpp.TextMode.Plain
    )
    assert found.valid
    return DecodedQr(text=found.text, ec_level=found.ec_level, extra=dict(found.extra))
