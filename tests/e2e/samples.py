"""Media the tests send: real files of each kind (an image that decodes, an OGG/Opus voice note), made
in memory, each different so that two tests never share one."""

import io
import os

from PIL import Image


def image(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A real image of random pixels, as JPEG or PNG."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, fmt)
    return out.getvalue()


def ogg_page(granule: int, packet: bytes, sequence: int) -> bytes:
    """One Ogg page holding one packet (the gateway's reader checks no CRC)."""
    segments = [255] * (len(packet) // 255) + [len(packet) % 255]
    return (b"OggS\x00\x00" + granule.to_bytes(8, "little", signed=True) + b"\x01\x00\x00\x00"
            + sequence.to_bytes(4, "little") + b"\x00\x00\x00\x00" + bytes([len(segments)]) + bytes(segments) + packet)


def ogg_opus(seconds: int) -> bytes:
    """A minimal OGG/Opus file that says it lasts ``seconds`` (pre-skip 312 samples, as libopus writes)."""
    head = b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    return (ogg_page(0, head, 0) + ogg_page(0, b"OpusTags" + bytes(8), 1)
            + ogg_page(seconds * 48000 + 312, os.urandom(40), 2))
