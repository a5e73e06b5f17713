"""The evaluation suite runs end to end on real data (quick mode) and its figures are sane.

Only sanity is checked here (rates are rates, genuine scores above impostor scores, files written);
the figures themselves are benchmarks' business (benchmarks/results/).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from benchmarks import data
from benchmarks.__main__ import run
from benchmarks.metrics import eer, fnmr_at
from benchmarks.evaluation.unlinkability import linkage

pytestmark = pytest.mark.skipif(not (data.DATA / "face" / "lfw").is_dir() or not (data.DATA / "fingerprint").is_dir(),
                                reason=f"shared data not found under {data.DATA}")


def test_metrics_on_known_distributions():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(2, 1, 20000), rng.normal(0, 1, 20000)
    # two unit normals 2 apart cross at 1: EER = P(N(0,1) > 1) = 0.1587
    assert eer(genuine, impostor) == pytest.approx(0.1587, abs=0.01)
    assert math.isnan(fnmr_at(genuine, impostor[:100], 1e-3))  # 100 impostors cannot resolve 1e-3
    same = linkage(rng.normal(0, 1, 5000), rng.normal(0, 1, 50000))
    apart = linkage(rng.normal(6, 1, 5000), rng.normal(0, 1, 50000))
    assert same.d_sys < 0.1 and apart.d_sys > 0.95
    # Fully separated lattice scores (IoM agreement k / m), as a key holder sees a reissue: the
    # float integral used to land a few ulps above 1 (a failed fresh-clone run).
    for _ in range(300):
        separated = linkage(rng.integers(3000, 4096, 280) / 4096, rng.integers(0, 2000, 2880) / 4096)
        assert 0.0 <= separated.d_sys <= 1.0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run(["report", str(out), "--quick", "--no-progress"])


def test_quick_report_files(quick_report):
    folder, _ = quick_report
    text = (folder / "report.md").read_text()
    for section in ("## Accuracy", "## Unlinkability", "## Renewability", "## Irreversibility", "## Speed"):
        assert section in text
    images = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(images) >= 8
    for name in images:
        png = folder / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"\bnan\b", text.lower())  # unresolvable rates are written n/a


def test_quick_report_figures_are_sane(quick_report):
    summary = quick_report[1].summary
    assert summary["accuracy"]
    for (label, protocol, system), rates in summary["accuracy"].items():
        assert 0.0 <= rates.eer <= 0.5, (label, protocol, system)
        assert rates.genuine_mean > rates.impostor_mean, (label, protocol, system)
        assert rates.genuine > 0 and rates.impostor > 0
        for value in rates.fnmr.values():
            assert math.isnan(value) or 0.0 <= value <= 1.0
    for (label, scenario), result in summary["linkage"].items():
        assert 0.0 <= result.d_sys <= 1.0 and 0.0 <= result.floor <= 1.0
    for label, attack in summary["attack"].items():
        assert 0.0 <= attack["vs stolen template"] <= 1.0
        assert attack["rows opened (database only)"].startswith("0 /")  # sealed rows never open under other keys
