"""QR codes as the API hands them out: a PNG, base64-encoded, that decodes to the engine's exact text."""

import base64
import io

import qrcode
from qrcode.constants import ERROR_CORRECT_L


def png_base64(text: str) -> str:
    # Low error correction keeps the long WhatsApp payload at a small, easily scanned version.
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_L, box_size=8, border=4)
    code.add_data(text)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image().save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
