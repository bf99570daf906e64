"""The picture of a scenario run, drawn as Jepsen draws its nemesis: time runs left to
right, every fault is a shaded band labelled with its command, and above them are the
height of each node (a flat line: it stopped committing; a gap: it did not answer) and
the committed transactions per second.

matplotlib is imported here only, with the Agg backend (files, no display), so the rest
of the CLI does not pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

BAND_COLOURS = ("#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def draw_timeline(
    path: Path,
    title: str,
    heights: Mapping[str, Sequence[tuple[float, int | None]]],
    tx_per_second: Sequence[int],
    bands: Sequence[tuple[float, float | None, str]],
) -> None:
    """``heights``: each node's sampled (seconds, height or None when it did not
    answer); ``tx_per_second``: committed txs in each second of the run; ``bands``:
    (start, end or None for an instant, command) of each fault."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max([t for series in heights.values() for t, _ in series] + [len(tx_per_second)])
    fig, (height_axes, rate) = plt.subplots(
        2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    for bank, series in heights.items():
        times = [t for t, _ in series]
        values = [float("nan") if h is None else h for _, h in series]
        height_axes.step(times, values, where="post", label=bank, linewidth=1.4)
    height_axes.set_ylabel("committed height")
    height_axes.legend(loc="lower right", fontsize=8, ncols=min(7, len(heights)))
    rate.bar(range(len(tx_per_second)), tx_per_second, width=1.0, align="edge")
    rate.set_ylabel("committed tx/s")
    rate.set_xlabel("seconds since the load started")
    rate.set_xlim(0, end)

    for n, (start, stop, command) in enumerate(bands):
        colour = BAND_COLOURS[n % len(BAND_COLOURS)]
        for axes in (height_axes, rate):
            if stop is None:
                axes.axvline(start, color=colour, linewidth=1.2, alpha=0.7)
            else:
                axes.axvspan(start, stop, color=colour, alpha=0.14, linewidth=0)
        height_axes.text(
            start,
            0.97 - 0.07 * (n % 4),
            f" {command}",
            transform=height_axes.get_xaxis_transform(),
            fontsize=7,
            color=colour,
            va="top",
        )
    height_axes.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
