"""What a standalone benchmark prints as it goes, kept to be written as its report file."""

from __future__ import annotations

import time
from pathlib import Path


class Transcript:
    def __init__(self):
        self.lines: list[str] = []
        self.started = time.perf_counter()

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def save(self, path: Path | None, timed: bool = True) -> None:
        """End with the run's duration (unless `timed` is off); write the lines to `path`, if any."""
        if timed:
            self(f"({self.elapsed:.0f} s)")
        if path:
            path.write_text("\n".join(self.lines) + "\n")
