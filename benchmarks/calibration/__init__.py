"""Calibration: tools that fit and write what the service ships (thresholds, score models,
cohorts, networks); rerun them only to change a shipped constant."""
