"""benchmarks.drills.hill_climb on real SFace embeddings, small: the climb under the rules in force is
stopped by the limiter after the per-subject budget with no band returned, and the report says so.
(The figures themselves: benchmarks/results/hill_climb.md.)"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import data
from benchmarks.drills import hill_climb
from vault.access.lockout import Limits

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900),
              pytest.mark.skipif(not (data.DATA / "face" / "lfw").is_dir(), reason=f"shared data not found under {data.DATA}")]


def test_the_budget_stops_a_banded_climb_with_no_band_given():
    result = asyncio.run(hill_climb.run(targets=1, crowd=20, max_calls=30, seed=7, log=lambda *_: None))
    rows = {row["policy"]: row for row in result["rows"]}
    assert set(rows) == set(hill_climb.POLICIES)
    in_force = rows[hill_climb.IN_FORCE]
    assert (in_force["calls"], in_force["bands"], in_force["stopped"]) == (Limits().per_subject, 0, "locked out")
    # Before a MATCH the service's answers carry no band, whatever the climber does.
    now = rows[hill_climb.NOW]
    assert now["bands"] == (1 if now["calls_to_match"] else 0)
    text = hill_climb.report(result, "test")
    assert "| target-0 |" in text and "locked out" in text
