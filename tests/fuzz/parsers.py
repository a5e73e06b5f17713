"""atheris harness: the ISO/IEC 19794-2 parser and the image decoders on arbitrary bytes.

Run: uv run python tests/fuzz/parsers.py iso|face|fingerprint -atheris_runs=20000 [corpus dir]
Any exception other than InvalidSample (and PoorSample for features) is a finding.
"""

import sys

import atheris

with atheris.instrument_imports():
    from vault.intake import images
    from vault.exceptions import InvalidSample, PoorSample
    from vault.intake.features import fingerprint
    from vault.intake.iso19794 import encode_iso19794_2, parse_iso19794_2

TARGET = sys.argv.pop(1)


def fuzz_iso(data: bytes) -> None:
    try:
        record = parse_iso19794_2(data)
    except InvalidSample:
        return
    # A record that parses must survive the feature code and re-encode to a record that parses.
    try:
        fingerprint.minutiae_features(record)
    except PoorSample:
        pass
    try:
        again = parse_iso19794_2(encode_iso19794_2(record))
    except ValueError:
        return  # not representable in the standard form (e.g. > 255 minutiae)
    assert len(again.minutiae) == len(record.minutiae)


def fuzz_face(data: bytes) -> None:
    try:
        rgb = images.decode_face(data)
    except InvalidSample:
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3


def fuzz_fingerprint(data: bytes) -> None:
    try:
        gray = images.decode_fingerprint(data)
    except InvalidSample:
        return
    assert gray.ndim == 2


atheris.Setup(sys.argv, {"iso": fuzz_iso, "face": fuzz_face, "fingerprint": fuzz_fingerprint}[TARGET])
atheris.Fuzz()
