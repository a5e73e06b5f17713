"""Evaluation suite for the vault: accuracy, calibration and speed on the shared research data."""
