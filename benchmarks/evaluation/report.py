"""Markdown report and matplotlib (Agg) figures of the evaluation suite."""

from __future__ import annotations

import math
import re
from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import metrics  # noqa: E402
from benchmarks.evaluation.unlinkability import Linkage  # noqa: E402

_PROBIT = NormalDist().inv_cdf
_DET_TICKS = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]


def pct(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Report:
    def __init__(self, folder: Path, title: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = [f"# {title}\n"]
        self.figures: list[Path] = []

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def write(self) -> Path:
        path = self.folder / "report.md"
        path.write_text("\n".join(self.parts))
        return path

    def _save(self, fig, name: str) -> str:
        path = self.folder / f"{slug(name)}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path)
        return path.name

    def det(self, name: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
        """DET plot (probit axes) of {label: (genuine, impostor)}; returns the Markdown image line.

        An error rate of 0 cannot be drawn on a probit axis and is not 0 either: it is below 1/N for
        N comparisons. Such points are drawn at 1/N (dotted, "< 1/N" in the legend), so a curve that
        separates perfectly stays visible, and the axes span what the data can resolve."""
        fig, ax = plt.subplots(figsize=(5.5, 5))
        fmr_floor = min(1 / max(len(impostor), 1) for _, impostor in curves.values())
        fnmr_floor = min(1 / max(len(genuine), 1) for genuine, _ in curves.values())
        for label, (genuine, impostor) in curves.items():
            _, fmr, fnmr = metrics.det(genuine, impostor)
            floor_x, floor_y = 1 / len(impostor), 1 / len(genuine)
            unresolved = (fmr < floor_x) | (fnmr < floor_y)
            inside = (fmr <= 0.5) & (fnmr <= 0.5)  # the plotted square
            x = [_PROBIT(v) for v in np.clip(fmr[inside], floor_x, 1 - 1e-9)]
            y = [_PROBIT(v) for v in np.clip(fnmr[inside], floor_y, 1 - 1e-9)]
            at_floor = unresolved[inside].any()
            (line,) = ax.plot(x, y, label=label + (" (at the edge: < 1/N)" if at_floor else ""))
            if at_floor:
                ax.plot(np.array(x)[unresolved[inside]], np.array(y)[unresolved[inside]], linestyle="none", marker=".",
                        color=line.get_color())
        low_x, low_y = 10 ** math.floor(math.log10(fmr_floor)), 10 ** math.floor(math.log10(fnmr_floor))
        def label(t: float) -> str:  # short: the probit axis crowds the low decades together
            return f"1e{round(math.log10(t))}" if t < 0.01 else f"{t:g}"

        x_ticks = [t for t in _DET_TICKS if t >= low_x]
        y_ticks = [t for t in _DET_TICKS if t >= low_y]
        if len(x_ticks) > 7:  # below 1e-4 every other decade
            x_ticks = [t for t in x_ticks if t >= 1e-4 or round(math.log10(t)) % 2 == 1]
        ax.set_xticks([_PROBIT(t) for t in x_ticks], [label(t) for t in x_ticks])
        ax.set_yticks([_PROBIT(t) for t in y_ticks], [label(t) for t in y_ticks])
        ax.set_xlim(_PROBIT(low_x), _PROBIT(0.5))
        ax.set_ylim(_PROBIT(low_y), _PROBIT(0.5))
        ax.set_xlabel("false match rate")
        ax.set_ylabel("false non-match rate")
        ax.grid(True, alpha=0.3)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
        return f"![DET {name}]({self._save(fig, 'det ' + name)})"

    def histograms(self, name: str, series: dict[str, np.ndarray], threshold: float | None = None,
                   xlabel: str = "IoM agreement") -> str:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        low = min(float(np.min(s)) for s in series.values())
        high = max(float(np.max(s)) for s in series.values())
        edges = np.linspace(low, high if high > low else low + 1e-6, 80)
        for label, values in series.items():
            ax.hist(values, bins=edges, density=True, histtype="step", label=f"{label} ({len(values)})")
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", lw=0.8, label="profile threshold")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
        return f"![{name}]({self._save(fig, 'hist ' + name)})"

    def linkage(self, name: str, result: Linkage) -> str:
        """Mated / non-mated densities with D<->(s), as in Gomez-Barrero et al. Fig. 3."""
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = result.centers[1] - result.centers[0] if len(result.centers) > 1 else 1.0
        ax.bar(result.centers, result.mated_density, width=width, alpha=0.5, label="mated")
        ax.bar(result.centers, result.nonmated_density, width=width, alpha=0.5, label="non-mated")
        ax.set_xlabel("score")
        ax.set_ylabel("density")
        right = ax.twinx()
        # Bins holding fewer than 5 scores of either kind make D<->(s) jump between 0 and 1 on
        # chance alone: drawn dotted and grey, so the tails' spikes read as what they are.
        sparse = ((result.mated_density * width * result.mated < 5)
                  | (result.nonmated_density * width * result.nonmated < 5))
        right.plot(result.centers, np.where(sparse, np.nan, result.d_local), color="k", lw=1, label="D<->(s)")
        right.plot(result.centers, np.where(sparse, result.d_local, np.nan), color="0.5", lw=1, ls=":",
                   label="D<->(s), bins of < 5 scores")
        right.set_ylim(0, 1.05)
        right.set_ylabel("D<->(s)")
        ax.set_title(f"{name}: D<->sys = {result.d_sys:.3f} (floor {result.floor:.3f})", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        more, more_labels = right.get_legend_handles_labels()
        ax.legend(handles + more, labels + more_labels, fontsize=7, loc="upper left")
        return f"![{name}]({self._save(fig, 'link ' + name)})"
