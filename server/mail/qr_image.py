"""The QR code of a login link, as the PNG the HTML part of the mail shows (SPEC.md §7.3).

Drawn by segno: maintained, pure Python with no dependencies, and it writes the PNG itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import segno

MODULE_PIXELS = 6
QUIET_ZONE_MODULES = 4  # ISO/IEC 18004 §7.3.8


@dataclass(frozen=True, slots=True)
class QrImage:
    png: bytes = field(repr=False)
    width: int  # in pixels, and the height


def qr_png(text: str) -> QrImage:
    """A 1-bit greyscale PNG of `text` at error-correction level M: `boost_error` off, so the
    level is the one SPEC.md states even where a higher one would fit the same size. The same
    text gives the same bytes."""
    code = segno.make_qr(text, error="m", boost_error=False)
    out = io.BytesIO()
    code.save(out, kind="png", scale=MODULE_PIXELS, border=QUIET_ZONE_MODULES)
    width, _ = code.symbol_size(scale=MODULE_PIXELS, border=QUIET_ZONE_MODULES)
    return QrImage(png=out.getvalue(), width=int(width))
