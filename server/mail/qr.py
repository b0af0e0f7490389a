"""The QR code of a login link, as a PNG for the HTML part of the mail.

`qrcode` computes the symbol (error correction level M, the mask with the lowest penalty); the
PNG is written here, 1 bit per pixel, so the bytes depend on the text alone: a message rendered
twice is byte-identical, and no imaging library is needed.
"""

from __future__ import annotations

import struct
import zlib

import qrcode
from qrcode.constants import ERROR_CORRECT_M

MODULE_PIXELS = 6
QUIET_ZONE_MODULES = 4  # ISO/IEC 18004 §7.3.8


def qr_matrix(text: str) -> list[list[bool]]:
    """Dark modules are True; the quiet zone is included."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE_MODULES)
    code.add_data(text)
    code.make(fit=True)
    return [[bool(module) for module in row] for row in code.get_matrix()]


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
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )


def qr_png(text: str) -> tuple[bytes, int]:
    """The PNG and its width (= height) in pixels."""
    matrix = qr_matrix(text)
    return png_from_matrix(matrix), len(matrix) * MODULE_PIXELS
