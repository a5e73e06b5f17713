"""ISO/IEC 19794-2:2005 finger minutiae records: a strict, hand-written parser and encoder.

Why not `nbis.NbisExtractor.load_iso_19794_2_2005`: nbis-py 0.1.3 only reads the layout its own
writer produces (a 26-byte header with no finger-view header and no extended-data block), so it
finds 0 minutiae in standard records such as the openafis FVC2002 ones.

Record layout (big-endian), ISO/IEC 19794-2:2005 section 7:

    record header, 24 bytes
        "FMR\\0"  " 20\\0"  record length (4)  capture equipment (2)
        width (2)  height (2)  x resolution (2)  y resolution (2)   # px/cm
        number of finger views (1)  reserved (1)
    per finger view
        finger position (1)  view number << 4 | impression type (1)  finger quality (1)
        number of minutiae (1)
        per minutia, 6 bytes
            type (2 bits: 01 ending, 10 bifurcation, 00 other) | x (14 bits)
            reserved (2 bits) | y (14 bits)
            angle (1)       # units of 360/256 degrees, counter-clockwise from the x axis
            quality (1)     # 0..100, 0 = not reported
        extended data block length (2), then that many bytes

Tolerated variants:

* nbis-py 0.1.3 (`Minutiae.to_iso_19794_2_2005`): header bytes 18..25 are finger position,
  view/impression, finger quality, 4 zero bytes and the minutia count (so "number of finger views"
  reads 0), minutiae follow at byte 26 with qualities 0..63, no extended-data block, no resolution.
  Recognised by those zero bytes and an exact length match; qualities are rescaled to 1..100.
* "Number of finger views" written as 0 while one standard finger view follows: read as 1.

Everything else is rejected with `InvalidSample`: truncation, trailing bytes, wrong magic or
version, a length field that disagrees with the data, more than one finger view, reserved codes,
coordinates outside a declared image size, out-of-range quality, resolution or finger position.
The parser never raises anything else on any input, never allocates from an unchecked length, and
refuses inputs over `MAX_RECORD_BYTES`. Error messages say what is wrong, never what the data holds.

Angle convention (checked against nbis-py and the openafis records): the ISO angle is measured
counter-clockwise *as seen on the image* (whose y axis points down) from the x axis (east). nbis
reports `Minutia.angle()` in exactly this convention and writes it unchanged into its ISO bytes, and
on FVC2002 the openafis (commercial SDK) angles agree with nbis's to a few degrees, for ridge
endings and bifurcations alike (no 180 degree flip). In image coordinates the direction vector of a
minutia with angle `a` is therefore `(cos a, -sin a)`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from vault.exceptions import InvalidSample

__all__ = [
    "MAX_RECORD_BYTES",
    "MinutiaeRecord",
    "encode_iso19794_2",
    "parse_iso19794_2",
]

MAX_RECORD_BYTES = 64 * 1024
"""Largest record accepted. One finger view holds at most 255 minutiae (1,530 bytes) plus an
extended-data block of at most 65,535 bytes."""

MAGIC = b"FMR\x00"
VERSION_2005 = b" 20\x00"
HEADER_LEN = 24
VIEW_HEADER_LEN = 4
MINUTIA_LEN = 6
EXT_LEN_LEN = 2
NBIS_HEADER_LEN = 26
NBIS_MAX_QUALITY = 63

MAX_COORDINATE = 0x3FFF  # 14 bits
MAX_FINGER_POSITION = 10
MAX_QUALITY = 100
# Plausible sensor resolutions in px/cm: 50..1000 (about 127..2540 ppi). 0 = not reported.
MIN_RESOLUTION = 50
MAX_RESOLUTION = 1000

ANGLE_UNIT = 2.0 * math.pi / 256.0

# 2-bit minutia type code <-> MinutiaeRecord kind (1 ending, 2 bifurcation, 0 other).
_TYPE_TO_KIND = {0b00: 0, 0b01: 1, 0b10: 2}
_KIND_TO_TYPE = {0: 0b00, 1: 0b01, 2: 0b10}

_HEADER = struct.Struct(">4s4sIHHHHHBB")
assert _HEADER.size == HEADER_LEN


@dataclass(frozen=True, eq=False, repr=False)
class MinutiaeRecord:
    """One finger's minutiae.

    `minutiae` is a read-only float32 array of shape (n, 5): x, y (pixels, origin top left, y down),
    angle in radians in [0, 2pi) (ISO convention, see the module docstring), kind (1 ridge ending,
    2 bifurcation, 0 other) and quality (0..100, 0 = not reported).

    The repr shows only the shape of the record, never minutia data, so it is safe to log.
    """

    width: int  # pixels, 0 = unknown
    height: int
    x_resolution: int  # px/cm, 0 = unknown
    y_resolution: int
    finger_position: int  # ISO code 0..10, 0 = unknown
    minutiae: np.ndarray

    def __post_init__(self) -> None:
        m = np.array(self.minutiae, dtype=np.float32, copy=True)
        if m.size == 0:
            m = m.reshape(0, 5)
        if m.ndim != 2 or m.shape[1] != 5:
            raise ValueError("minutiae must be an array of shape (n, 5)")
        m.setflags(write=False)
        object.__setattr__(self, "minutiae", m)
        for name in ("width", "height", "x_resolution", "y_resolution", "finger_position"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def __len__(self) -> int:
        return int(self.minutiae.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MinutiaeRecord):
            return NotImplemented
        return (
            self.width == other.width
            and self.height == other.height
            and self.x_resolution == other.x_resolution
            and self.y_resolution == other.y_resolution
            and self.finger_position == other.finger_position
            and np.array_equal(self.minutiae, other.minutiae)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking payload; compare, don't hash

    def __repr__(self) -> str:
        return (
            f"MinutiaeRecord({len(self)} minutiae, {self.width}x{self.height} px, "
            f"resolution {self.x_resolution}x{self.y_resolution} px/cm, "
            f"finger position {self.finger_position})"
        )


def parse_iso19794_2(data: bytes) -> MinutiaeRecord:
    """Parse one ISO/IEC 19794-2:2005 finger minutiae record (one finger view).

    Raises `InvalidSample` (and nothing else) for anything that is not a well-formed record.
    """
    try:
        return _parse(data)
    except InvalidSample:
        raise
    except Exception:  # defensive: the checks below should leave nothing else reachable
        raise InvalidSample("the fingerprint minutiae record is malformed") from None


def _parse(data: bytes) -> MinutiaeRecord:
    if isinstance(data, memoryview):
        if data.nbytes > MAX_RECORD_BYTES:
            raise InvalidSample(_too_large())
        data = data.tobytes()
    elif isinstance(data, bytearray):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise InvalidSample("the fingerprint minutiae record must be bytes")
    size = len(data)
    if size == 0:
        raise InvalidSample("the fingerprint minutiae record is empty")
    if size > MAX_RECORD_BYTES:
        raise InvalidSample(_too_large())
    if size < HEADER_LEN:
        raise InvalidSample("the fingerprint minutiae record is truncated (incomplete header)")

    (magic, version, length, _equipment, width, height, xres, yres, n_views, _reserved) = (
        _HEADER.unpack_from(data, 0)
    )
    if magic != MAGIC:
        raise InvalidSample("not an ISO/IEC 19794-2 finger minutiae record (bad format identifier)")
    if version != VERSION_2005:
        raise InvalidSample(
            "unsupported finger minutiae record version; only ISO/IEC 19794-2:2005 is supported"
        )
    if length != size:
        if int.from_bytes(data[8:10], "big") == size:
            raise InvalidSample(
                "ANSI INCITS 378 minutiae records are not supported; send ISO/IEC 19794-2:2005"
            )
        raise InvalidSample("the record length field does not match the size of the data")
    if width > MAX_COORDINATE + 1 or height > MAX_COORDINATE + 1:
        raise InvalidSample("the record declares an image size larger than the format allows")

    if n_views == 0 and _looks_like_nbis(data):
        return _parse_nbis(data, width, height)

    if n_views == 0:
        if size == HEADER_LEN:
            raise InvalidSample("the fingerprint minutiae record holds no finger view")
        n_views = 1  # writers that leave the count at 0 while one view follows
    if n_views != 1:
        raise InvalidSample(
            f"the record holds {n_views} finger views; exactly one finger view is supported"
        )
    _check_resolution(xres, yres)

    offset = HEADER_LEN
    if size < offset + VIEW_HEADER_LEN:
        raise InvalidSample("the fingerprint minutiae record is truncated (incomplete finger view)")
    finger_position, _view_impression, finger_quality, count = data[offset : offset + 4]
    offset += VIEW_HEADER_LEN
    _check_finger(finger_position, finger_quality)

    end = offset + MINUTIA_LEN * count
    if size < end + EXT_LEN_LEN:
        raise InvalidSample("the fingerprint minutiae record is truncated (minutiae missing)")
    minutiae = _decode_minutiae(data[offset:end], count, width, height, MAX_QUALITY)
    offset = end

    ext_len = int.from_bytes(data[offset : offset + EXT_LEN_LEN], "big")
    offset += EXT_LEN_LEN
    if size < offset + ext_len:
        raise InvalidSample("the fingerprint minutiae record is truncated (extended data missing)")
    offset += ext_len  # extended data (ridge counts, core/delta, vendor data) is not used
    if offset != size:
        raise InvalidSample("the fingerprint minutiae record has unexpected trailing data")

    return MinutiaeRecord(width, height, xres, yres, finger_position, minutiae)


def _looks_like_nbis(data: bytes) -> bool:
    size = len(data)
    return (
        size >= NBIS_HEADER_LEN
        and data[21:25] == b"\x00\x00\x00\x00"
        and size == NBIS_HEADER_LEN + MINUTIA_LEN * data[25]
    )


def _parse_nbis(data: bytes, width: int, height: int) -> MinutiaeRecord:
    finger_position, _view_impression, finger_quality = data[18], data[19], data[20]
    _check_finger(finger_position, finger_quality)
    count = data[25]
    minutiae = _decode_minutiae(data[NBIS_HEADER_LEN:], count, width, height, NBIS_MAX_QUALITY)
    # nbis writes floor(reliability * 63); rescale to the ISO range 1..100 (its 0 means "very
    # unreliable", not the ISO "not reported").
    minutiae[:, 4] = np.maximum(1.0, np.round(minutiae[:, 4] * (MAX_QUALITY / NBIS_MAX_QUALITY)))
    return MinutiaeRecord(width, height, 0, 0, finger_position, minutiae)


def _check_resolution(xres: int, yres: int) -> None:
    if (xres == 0) != (yres == 0):
        raise InvalidSample("the record gives a resolution for only one axis")
    for r in (xres, yres):
        if r != 0 and not MIN_RESOLUTION <= r <= MAX_RESOLUTION:
            raise InvalidSample("the record declares an implausible scanner resolution")


def _check_finger(finger_position: int, finger_quality: int) -> None:
    if finger_position > MAX_FINGER_POSITION:
        raise InvalidSample("the record has an invalid finger position code")
    if finger_quality > MAX_QUALITY:
        raise InvalidSample("the record has an out-of-range finger quality")


def _decode_minutiae(
    block: bytes, count: int, width: int, height: int, max_quality: int
) -> np.ndarray:
    """Decode `count` 6-byte minutiae; `block` has been checked to hold exactly that many."""
    if len(block) != MINUTIA_LEN * count:  # guaranteed by the callers; keeps this function safe
        raise InvalidSample("the fingerprint minutiae record is truncated (minutiae missing)")
    raw = np.frombuffer(block, dtype=np.uint8).reshape(count, MINUTIA_LEN).astype(np.int32)
    word_x = (raw[:, 0] << 8) | raw[:, 1]
    word_y = (raw[:, 2] << 8) | raw[:, 3]
    type_code = word_x >> 14
    x = word_x & MAX_COORDINATE
    y = word_y & MAX_COORDINATE
    angle = raw[:, 4]
    quality = raw[:, 5]
    if np.any(type_code == 0b11):
        raise InvalidSample("the record uses a reserved minutia type code")
    if np.any(word_y >> 14):
        raise InvalidSample("the record sets reserved bits in a minutia")
    if (width and np.any(x >= width)) or (height and np.any(y >= height)):
        raise InvalidSample("the record has a minutia outside the declared image size")
    if np.any(quality > max_quality):
        raise InvalidSample("the record has an out-of-range minutia quality")

    kind = np.zeros(count, dtype=np.float32)
    kind[type_code == 0b01] = 1.0
    kind[type_code == 0b10] = 2.0
    out = np.empty((count, 5), dtype=np.float32)
    out[:, 0] = x
    out[:, 1] = y
    out[:, 2] = angle * np.float32(ANGLE_UNIT)
    out[:, 3] = kind
    out[:, 4] = quality
    return out


def encode_iso19794_2(record: MinutiaeRecord) -> bytes:
    """Encode a record in the standard ISO/IEC 19794-2:2005 form: one finger view, no extended data.

    Coordinates are rounded to whole pixels, angles to 1/256 of a turn, qualities to integers.
    Raises ValueError for a record that cannot be represented (more than 255 minutiae, coordinates
    out of range, unknown kind).
    """
    m = np.asarray(record.minutiae, dtype=np.float64)
    count = m.shape[0]
    if count > 255:
        raise ValueError("an ISO/IEC 19794-2 finger view holds at most 255 minutiae")
    if not np.all(np.isfinite(m)):
        raise ValueError("minutiae must be finite")
    for name in ("width", "height"):
        if not 0 <= getattr(record, name) <= MAX_COORDINATE + 1:
            raise ValueError(f"{name} out of range")
    for name in ("x_resolution", "y_resolution"):
        if not 0 <= getattr(record, name) <= 0xFFFF:
            raise ValueError(f"{name} out of range")
    if not 0 <= record.finger_position <= MAX_FINGER_POSITION:
        raise ValueError("finger position out of range")

    x = np.rint(m[:, 0]).astype(np.int64)
    y = np.rint(m[:, 1]).astype(np.int64)
    limit_x = record.width - 1 if record.width else MAX_COORDINATE
    limit_y = record.height - 1 if record.height else MAX_COORDINATE
    if np.any((x < 0) | (x > limit_x) | (y < 0) | (y > limit_y)):
        raise ValueError("a minutia lies outside the image or the 14-bit coordinate range")
    angle = np.rint(np.mod(m[:, 2], 2.0 * math.pi) / ANGLE_UNIT).astype(np.int64) % 256
    kinds = np.rint(m[:, 3]).astype(np.int64)
    if not np.all(np.isin(kinds, (0, 1, 2))):
        raise ValueError("minutia kind must be 0 (other), 1 (ending) or 2 (bifurcation)")
    type_code = np.select([kinds == 1, kinds == 2], [0b01, 0b10], 0b00)
    quality = np.clip(np.rint(m[:, 4]), 0, MAX_QUALITY).astype(np.int64)

    body = np.empty((count, MINUTIA_LEN), dtype=np.uint8)
    word_x = (type_code << 14) | x
    body[:, 0] = word_x >> 8
    body[:, 1] = word_x & 0xFF
    body[:, 2] = y >> 8
    body[:, 3] = y & 0xFF
    body[:, 4] = angle
    body[:, 5] = quality

    size = HEADER_LEN + VIEW_HEADER_LEN + MINUTIA_LEN * count + EXT_LEN_LEN
    header = _HEADER.pack(
        MAGIC,
        VERSION_2005,
        size,
        0,  # capture equipment: not certified, unknown device
        record.width,
        record.height,
        record.x_resolution,
        record.y_resolution,
        1,  # one finger view
        0,
    )
    # finger position, view 0 / impression 0 (live-scan plain), finger quality 0 (not reported)
    view = bytes((record.finger_position, 0, 0, count))
    return header + view + body.tobytes() + b"\x00\x00"


def _too_large() -> str:
    return f"the fingerprint minutiae record is larger than {MAX_RECORD_BYTES} bytes"
