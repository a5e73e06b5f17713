"""Intake: samples as they arrive, decoded and read into unit feature vectors (images, ISO/IEC
19794-2 records, the extractors and the worker pool that runs them)."""
