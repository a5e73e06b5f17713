"""Decoding untrusted image bytes, with format and size limits checked before any pixel is decoded.

Pillow reads the header lazily, so a decompression bomb is refused by its declared size before
its pixels are inflated.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from vault.exceptions import InvalidSample

# PPM covers binary PGM (ORL faces); camera and panel SDKs deliver BMP and TIFF too
FACE_FORMATS = frozenset({"JPEG", "PNG", "PPM", "BMP", "TIFF"})
FINGERPRINT_FORMATS = frozenset({"TIFF", "PNG", "BMP", "PPM"})
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_FACE_PIXELS = 4096 * 4096
MAX_FINGERPRINT_PIXELS = 1024 * 1024  # a single-finger capture at 500 ppi; LEADER takes ~4 s at this size
MIN_SIDE = 32
MAX_ASPECT = 4  # no face or fingerprint capture is a strip; a 32x2048 image took 15 s to be refused



def format_names(formats: frozenset[str]) -> str:
    """The formats as an operator knows them, for error messages: 'BMP, JPEG, PGM/PPM, PNG or TIFF'."""
    names = sorted("PGM/PPM" if f == "PPM" else f for f in formats)
    return ", ".join(names[:-1]) + " or " + names[-1]


# Our own limits are stricter; this only stops Pillow from warning instead of failing.
Image.MAX_IMAGE_PIXELS = MAX_FACE_PIXELS


def _open(data: bytes, formats: frozenset[str], max_pixels: int, what: str) -> Image.Image:
    if not data:
        raise InvalidSample(f"{what} image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidSample(f"{what} image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidSample(f"{what} image declares more than {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise InvalidSample(f"{what} image is not a readable image file (send {format_names(formats)})") from None
    except Exception:
        raise InvalidSample(f"{what} image is corrupt") from None
    if image.format not in formats:
        raise InvalidSample(f"{what} images must be {format_names(formats)}; got {image.format}")
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidSample(f"{what} image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    if min(width, height) < MIN_SIDE:
        raise InvalidSample(f"{what} image is {width}x{height} pixels; at least {MIN_SIDE} a side is needed")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidSample(f"{what} image is {width}x{height} pixels; sides more than {MAX_ASPECT}:1 apart are refused")
    return image


def _decode(image: Image.Image, mode: str, what: str) -> np.ndarray:
    # face_recognition's import turns this process-wide switch on (it pads truncated files with
    # grey); a truncated sample must be refused, whatever was imported in this worker before.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
        return np.asarray(image.convert(mode))
    except Exception:
        raise InvalidSample(f"{what} image is truncated or corrupt") from None


def decode_face(data: bytes) -> np.ndarray:
    """RGB uint8 array (h, w, 3) of a JPEG, PNG, PGM/PPM, BMP or TIFF face image (grey, palette and
    16-bit images are converted)."""
    return _decode(_open(data, FACE_FORMATS, MAX_FACE_PIXELS, "face"), "RGB", "face")


def decode_fingerprint(data: bytes) -> np.ndarray:
    """8-bit grayscale array (h, w) of a TIFF, PNG, BMP or PGM fingerprint image."""
    return _decode(_open(data, FINGERPRINT_FORMATS, MAX_FINGERPRINT_PIXELS, "fingerprint"), "L", "fingerprint")
