"""Evaluation: accuracy and protection measured on the shared data (the report, DET curves,
unlinkability, attacks, baselines, operating points)."""
