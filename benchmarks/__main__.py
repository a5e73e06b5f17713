"""The vault's evaluation suite.

    uv run python -m benchmarks report OUT [--quick] [--keys N] [--face-shape M Q [THRESHOLD]]
    uv run python -m benchmarks tune OUT [--quick] [--keys N]

`report`: accuracy (raw vs protected, key stolen / secret, single vs multi-sample enrolment, DET
curves), unlinkability, renewability, irreversibility (pre-image attack) and speed on every data
set in ../shared/data, written to OUT/report.md with PNG figures. `tune`: the face transform sweep.
`--quick`: small subsets (under 2 minutes on 2 cores once features are cached), for tests; its
figures are not for reporting. Features and bozorth3 scores are cached (benchmarks.features.CACHE).
Other entry points: `python -m benchmarks.calibration.calibrate`, `benchmarks/performance/identify_speed.py` (1:N at scale).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.evaluation import evaluate
from benchmarks.calibration import tune
from vault.templates.profiles import CURRENT, FACE


def main(argv: list[str] | None = None) -> int:
    run(sys.argv[1:] if argv is None else argv)
    return 0


def run(argv: list[str]):
    """Parse, run and return the Report (its `summary` holds the computed figures)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("report", help="the full evaluation report")
    rep.add_argument("out", type=Path)
    rep.add_argument("--quick", action="store_true")
    rep.add_argument("--keys", type=int)
    rep.add_argument("--attack-targets", type=int)
    rep.add_argument("--face-shape", nargs="+", type=float, metavar=("M", "Q"),
                     help="evaluate a candidate face transform (m, q[, threshold]) instead of the current profile")
    tun = commands.add_parser("tune", help="face transform sweep")
    tun.add_argument("out", type=Path)
    tun.add_argument("--quick", action="store_true")
    tun.add_argument("--keys", type=int, default=2)
    for sub in (rep, tun):
        sub.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    command = "uv run python -m benchmarks " + shlex.join(argv)

    if args.command == "tune":
        report = tune.run(args.out, args.quick, args.keys, command, progress=not args.no_progress)
    else:
        extra = {}
        if args.face_shape:
            m, q = int(args.face_shape[0]), int(args.face_shape[1])
            threshold = args.face_shape[2] if len(args.face_shape) > 2 else None
            if threshold is None:
                parser.error("--face-shape needs a threshold (from `tune`) to report decisions")
            extra["face_profile"] = evaluate.with_shape(CURRENT[FACE], m, q, threshold)
        cfg = evaluate.Config.for_quick(**extra) if args.quick else evaluate.Config(**extra)
        if args.keys:
            cfg.keys = args.keys
        if args.attack_targets:
            cfg.attack_targets = args.attack_targets
        cfg.progress = not args.no_progress
        report = evaluate.run(args.out, cfg, command)
    print(f"wrote {args.out / 'report.md'} and {len(report.figures)} figures")
    return report


if __name__ == "__main__":
    raise SystemExit(main())
