"""ISO/IEC 19794-2:2005 parser and encoder, against the shared FVC2002 openafis records and nbis."""

from __future__ import annotations

import io
import math
import pathlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.exceptions import InvalidSample
from vault.intake.iso19794 import (
    MAX_RECORD_BYTES,
    MinutiaeRecord,
    encode_iso19794_2,
    parse_iso19794_2,
)

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
ISO_DIR = DATA / "fingerprint_iso19794_2" / "fvc2002"
IMAGE_DIR = DATA / "fingerprint"

needs_iso = pytest.mark.skipif(
    not ISO_DIR.is_dir(), reason=f"shared ISO 19794-2 records not found at {ISO_DIR}"
)
needs_images = pytest.mark.skipif(
    not IMAGE_DIR.is_dir(), reason=f"shared fingerprint images not found at {IMAGE_DIR}"
)

ANGLE_UNIT = 2 * math.pi / 256


def iso_files():
    return sorted(ISO_DIR.glob("db*_b/*.iso"))


def sample_record(
    n: int = 20, width: int = 300, height: int = 400, seed: int = 0
) -> MinutiaeRecord:
    """A valid record with already-quantised values (so it survives encode -> parse exactly)."""
    rng = np.random.default_rng(seed)
    m = np.column_stack(
        [
            rng.integers(0, width, n),
            rng.integers(0, height, n),
            rng.integers(0, 256, n) * np.float32(ANGLE_UNIT),
            rng.integers(0, 3, n),
            rng.integers(0, 101, n),
        ]
    ).astype(np.float32)
    return MinutiaeRecord(width, height, 197, 197, 2, m)


def valid_bytes() -> bytes:
    return encode_iso19794_2(sample_record())


def assert_invalid(data) -> InvalidSample:
    with pytest.raises(InvalidSample) as info:
        parse_iso19794_2(data)
    return info.value


# --- the openafis records -------------------------------------------------------------------


@needs_iso
def test_every_fvc2002_record_parses_with_plausible_content():
    files = iso_files()
    assert len(files) == 320
    for path in files:
        record = parse_iso19794_2(path.read_bytes())
        m = record.minutiae
        assert m.dtype == np.float32 and m.shape[1] == 5
        assert 5 <= len(record) <= 150, path.name
        assert record.width > 0 and record.height > 0
        assert 50 <= record.x_resolution <= 1000 and 50 <= record.y_resolution <= 1000
        assert 0 <= record.finger_position <= 10
        assert np.all((m[:, 0] >= 0) & (m[:, 0] < record.width))
        assert np.all((m[:, 1] >= 0) & (m[:, 1] < record.height))
        assert np.all((m[:, 2] >= 0) & (m[:, 2] < 2 * math.pi))
        assert set(np.unique(m[:, 3])) <= {0.0, 1.0, 2.0}
        assert np.all((m[:, 4] >= 0) & (m[:, 4] <= 100))
        # both minutia types occur in a real fingerprint
        assert {1.0, 2.0} <= set(np.unique(m[:, 3])), path.name


@needs_iso
def test_fvc2002_records_re_encode_to_the_same_bytes():
    # The openafis records are in the standard form our encoder writes (one view, no extended data).
    for path in iso_files()[::7]:
        data = path.read_bytes()
        record = parse_iso19794_2(data)
        assert encode_iso19794_2(record) == data
        assert parse_iso19794_2(encode_iso19794_2(record)) == record


# --- round trips ----------------------------------------------------------------------------


def test_round_trip_is_identical():
    for seed, n in enumerate([0, 1, 12, 60, 255]):
        record = sample_record(n=n, seed=seed)
        data = encode_iso19794_2(record)
        assert len(data) == 24 + 4 + 6 * n + 2
        assert parse_iso19794_2(data) == record
        assert parse_iso19794_2(bytearray(data)) == record
        assert parse_iso19794_2(memoryview(data)) == record


def test_round_trip_with_unknown_size_and_resolution():
    m = sample_record(n=15).minutiae.copy()
    m[:, 0] += 5000  # allowed when the image size is not stated
    record = MinutiaeRecord(0, 0, 0, 0, 0, m)
    assert parse_iso19794_2(encode_iso19794_2(record)) == record


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 255),
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 2000),
    height=st.integers(1, 2000),
)
def test_round_trip_property(n, seed, width, height):
    record = sample_record(n=n, width=width, height=height, seed=seed)
    assert parse_iso19794_2(encode_iso19794_2(record)) == record


def test_encoder_quantises_angles_and_wraps():
    m = np.array([[10, 20, 2 * math.pi - 1e-4, 1, 50], [30, 40, -ANGLE_UNIT, 2, 0]], np.float32)
    parsed = parse_iso19794_2(encode_iso19794_2(MinutiaeRecord(100, 100, 0, 0, 0, m)))
    assert parsed.minutiae[0, 2] == 0.0
    assert parsed.minutiae[1, 2] == pytest.approx(255 * ANGLE_UNIT)


def test_encoder_refuses_unrepresentable_records():
    with pytest.raises(ValueError):
        encode_iso19794_2(sample_record(n=256))
    m = sample_record(n=3).minutiae.copy()
    m[0, 0] = 300  # == width
    with pytest.raises(ValueError):
        encode_iso19794_2(MinutiaeRecord(300, 400, 0, 0, 0, m))
    m = sample_record(n=3).minutiae.copy()
    m[0, 3] = 3
    with pytest.raises(ValueError):
        encode_iso19794_2(MinutiaeRecord(300, 400, 0, 0, 0, m))


def test_record_is_read_only_and_repr_has_no_minutia_data():
    record = sample_record(n=13)
    with pytest.raises(ValueError):
        record.minutiae[0, 0] = 1.0
    text = repr(record)
    assert "13 minutiae" in text
    for value in record.minutiae[:, :2].ravel()[:8]:
        assert f"{value:.1f}" not in text


# --- nbis -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nbis_extractor():
    nbis = pytest.importorskip("nbis")
    settings_ = nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=False, ppi=None
    )
    return nbis.new_nbis_extractor(settings_)


NBIS_IMAGES = [
    "fvc2000/db1_b/101_1.tif",
    "fvc2000/db3_b/105_2.tif",
    "fvc2002/db1_b/103_4.tif",
    "fvc2002/db2_b/108_8.tif",
    "fvc2002/db3_b/110_3.tif",
    "fvc2002/db4_b/102_6.tif",
]


@needs_images
@pytest.mark.parametrize("name", NBIS_IMAGES)
def test_nbis_iso_bytes_agree_with_nbis_minutiae(nbis_extractor, name):
    image = (IMAGE_DIR / name).read_bytes()
    minutiae = nbis_extractor.extract_minutiae(image)
    record = parse_iso19794_2(bytes(minutiae.to_iso_19794_2_2005()))
    from PIL import Image

    with Image.open(io.BytesIO(image)) as img:
        assert (record.width, record.height) == img.size
    assert (record.x_resolution, record.y_resolution) == (0, 0)

    kinds = {"RIDGE_ENDING": 1, "BIFURCATION": 2}
    expected = np.array(
        [(m.x(), m.y(), m.angle(), kinds[m.kind().name], m.reliability()) for m in minutiae.get()],
        dtype=np.float64,
    )
    got = record.minutiae.astype(np.float64)
    assert len(got) == len(expected) > 0
    expected = expected[np.lexsort((expected[:, 1], expected[:, 0]))]
    got = got[np.lexsort((got[:, 1], got[:, 0]))]
    np.testing.assert_array_equal(got[:, :2], expected[:, :2])
    np.testing.assert_array_equal(got[:, 3], expected[:, 3])
    # nbis angles are degrees counter-clockwise from east, the ISO convention: same angle,
    # up to the 360/256 degree quantisation.
    diff = np.degrees(got[:, 2]) - expected[:, 2]
    diff = (diff + 180) % 360 - 180
    assert np.abs(diff).max() <= 360 / 256 / 2 + 1e-6
    # nbis writes floor(reliability * 63); we rescale to 1..100
    assert np.abs(got[:, 4] - 100 * expected[:, 4]).max() <= 100 / 63 + 0.5 + 1e-6
    assert got[:, 4].min() >= 1


@needs_images
@needs_iso
def test_angle_convention_matches_the_openafis_records(nbis_extractor):
    """Image-derived (nbis) and record-derived (commercial SDK) minutiae of the same impression
    point the same way: no 180 degree flip for ridge endings, no mirrored angles.

    The openafis records hold minutiae of the image resized to the record's width x height, so
    nbis's minutiae are mapped into that frame (angles through the same stretch) before pairing.
    """
    from PIL import Image

    diffs = []
    for db, name in [(2, "101_1"), (2, "104_3"), (4, "102_2"), (4, "107_5")]:
        image = (IMAGE_DIR / "fvc2002" / f"db{db}_b" / f"{name}.tif").read_bytes()
        ours = parse_iso19794_2(bytes(nbis_extractor.extract_minutiae(image).to_iso_19794_2_2005()))
        theirs = parse_iso19794_2((ISO_DIR / f"db{db}_b" / f"{name}.iso").read_bytes())
        with Image.open(io.BytesIO(image)) as img:
            sx, sy = theirs.width / img.size[0], theirs.height / img.size[1]
        a = ours.minutiae.astype(np.float64)
        b = theirs.minutiae.astype(np.float64)
        ax, ay = a[:, 0] * sx, a[:, 1] * sy
        angle = np.arctan2(np.sin(a[:, 2]) * sy, np.cos(a[:, 2]) * sx)
        dist = np.hypot(ax[:, None] - b[None, :, 0], ay[:, None] - b[None, :, 1])
        nearest = dist.argmin(axis=1)
        close = dist[np.arange(len(a)), nearest] < 4
        d = np.degrees(b[nearest[close], 2] - angle[close])
        diffs.append((d + 180) % 360 - 180)
    diffs = np.concatenate(diffs)
    assert diffs.size >= 40  # the two extractors agree on many minutiae
    assert np.mean(np.abs(diffs) < 30) > 0.8
    assert abs(np.median(diffs)) < 10


# --- the nbis variant and other tolerated forms ---------------------------------------------


def nbis_variant(record: MinutiaeRecord, quality63: np.ndarray | None = None) -> bytes:
    """What nbis-py 0.1.3 writes: 26-byte header, no finger-view header, no extended data."""
    standard = encode_iso19794_2(record)
    n = len(record)
    body = bytearray(standard[28 : 28 + 6 * n])
    if quality63 is not None:
        body[5::6] = bytes(int(q) for q in quality63)
    header = bytearray(standard[:18])
    header[8:12] = struct.pack(">I", 26 + 6 * n)
    header += bytes([record.finger_position, 0, 0, 0, 0, 0, 0, n])
    return bytes(header + body)


def test_nbis_variant_is_read():
    record = sample_record(n=30)
    q63 = np.arange(30) % 64
    parsed = parse_iso19794_2(nbis_variant(record, q63))
    assert len(parsed) == 30
    assert (parsed.width, parsed.height) == (record.width, record.height)
    assert (parsed.x_resolution, parsed.y_resolution) == (0, 0)
    np.testing.assert_array_equal(parsed.minutiae[:, :4], record.minutiae[:, :4])
    np.testing.assert_array_equal(parsed.minutiae[:, 4], np.maximum(1, np.round(q63 * 100 / 63)))


def test_zero_finger_views_with_one_standard_view_following():
    data = bytearray(valid_bytes())
    data[22] = 0
    assert parse_iso19794_2(bytes(data)) == parse_iso19794_2(valid_bytes())


def test_extended_data_is_skipped():
    record = sample_record(n=5)
    data = bytearray(encode_iso19794_2(record))
    ext = b"\x00\x01\x00\x04abcd"
    data[-2:] = struct.pack(">H", len(ext))
    data += ext
    data[8:12] = struct.pack(">I", len(data))
    assert parse_iso19794_2(bytes(data)) == record


# --- rejection ------------------------------------------------------------------------------


def test_empty_and_garbage_are_rejected():
    for data in [b"", b"\x00", b"garbage" * 10, b"FMR\x00", bytes(24), b"\xff" * 100]:
        assert_invalid(data)


def test_non_bytes_are_rejected():
    for data in [None, "FMR\x00 20\x00", 12, [1, 2, 3]]:
        assert_invalid(data)


def test_every_truncation_is_rejected():
    data = valid_bytes()
    for n in range(len(data)):
        assert_invalid(data[:n])


def test_trailing_bytes_are_rejected():
    data = bytearray(valid_bytes() + b"\x00\x00")
    assert_invalid(bytes(data))  # length field now disagrees
    data[8:12] = struct.pack(">I", len(data))
    assert_invalid(bytes(data))  # length agrees but two bytes follow the view


def test_oversized_input_is_rejected_without_parsing():
    huge = bytearray(valid_bytes()) + bytes(MAX_RECORD_BYTES)
    huge[8:12] = struct.pack(">I", len(huge))
    assert "larger than" in assert_invalid(bytes(huge)).message
    assert_invalid(memoryview(bytes(huge)))


def mutate(offset: int, value: bytes) -> bytes:
    data = bytearray(valid_bytes())
    data[offset : offset + len(value)] = value
    return bytes(data)


@pytest.mark.parametrize(
    "offset, value, what",
    [
        (0, b"FMX\x00", "magic"),
        (4, b" 30\x00", "2011 version"),
        (8, struct.pack(">I", 10**6), "length field too large"),
        (8, struct.pack(">I", 29), "length field too small"),
        (18, struct.pack(">HH", 197, 0), "one resolution missing"),
        (18, struct.pack(">HH", 5000, 5000), "absurd resolution"),
        (22, b"\x02", "two finger views"),
        (22, b"\xff", "255 finger views"),
        (24, b"\x0b", "finger position 11"),
        (26, b"\x65", "finger quality 101"),
        (27, b"\xff", "minutia count beyond the data"),
        (27, b"\x05", "minutia count short of the data"),
        (28, b"\xc0", "reserved minutia type"),
        (30, b"\x40", "reserved y bits"),
        (33, b"\xff", "minutia quality 255"),
        (148, b"\xff\xff", "extended data longer than the record"),
    ],
)
def test_corrupt_fields_are_rejected(offset, value, what):
    assert_invalid(mutate(offset, value))


def test_minutia_outside_the_image_is_rejected_without_revealing_it():
    record = sample_record(n=3)
    data = bytearray(encode_iso19794_2(record))
    x = 1234
    data[28:30] = struct.pack(">H", (0b01 << 14) | x)
    message = assert_invalid(bytes(data)).message
    assert str(x) not in message and "\\x" not in message


def test_ansi_378_record_is_named():
    body = valid_bytes()[12:]
    ansi = b"FMR\x00 20\x00" + struct.pack(">H", 10 + 4 + len(body)) + b"\x00" * 4 + body
    assert "ANSI" in assert_invalid(ansi).message


def test_zero_views_and_no_data_is_rejected():
    data = bytearray(valid_bytes()[:24])
    data[8:12] = struct.pack(">I", 24)
    data[22] = 0
    assert_invalid(bytes(data))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_only_ever_raise_invalid_sample(data):
    try:
        record = parse_iso19794_2(data)
    except InvalidSample as exc:
        assert exc.message and "\\x" not in exc.message
    else:
        assert isinstance(record, MinutiaeRecord)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_mutated_records_only_ever_raise_invalid_sample(data):
    raw = bytearray(valid_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw[8:12] = struct.pack(">I", len(raw))  # keep the length consistent to go deeper
    try:
        record = parse_iso19794_2(bytes(raw))
    except InvalidSample:
        return
    m = record.minutiae
    assert m.shape == (len(record), 5) and np.all(np.isfinite(m))
    if record.width:
        assert np.all(m[:, 0] < record.width)
