"""The picture of a scenario run, drawn as Jepsen draws its nemesis: time runs left to
right, every fault is a shaded band labelled with its command, and above them are the
height of each node (a flat line: it stopped committing; a gap: it did not answer) and
the committed transactions per second.

matplotlib is imported here only, with the Agg backend (files, no display), so the rest
of the CLI does not pay for it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.devnet.experiment import ScenarioReport

BAND_COLOURS = ("#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def draw_timeline(report: ScenarioReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max([s.at for s in report.samples] + [report.scenario.load.duration])
    fig, (heights, rate) = plt.subplots(
        2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    for bank in [e.bank for e in report.check.nodes]:
        times, values = [], []
        for sample in report.samples:
            if sample.bank == bank:
                times.append(sample.at)
                values.append(float("nan") if sample.height is None else sample.height)
        heights.step(times, values, where="post", label=bank, linewidth=1.4)
    heights.set_ylabel("committed height")
    heights.legend(loc="lower right", fontsize=8, ncols=min(7, len(report.check.nodes)))
    per_second: Counter[int] = Counter()
    for block in report.committed:
        if block.at >= 0:
            per_second[int(block.at)] += block.txs
    seconds = list(range(int(end) + 1))
    rate.bar(seconds, [per_second.get(s, 0) for s in seconds], width=1.0, align="edge")
    rate.set_ylabel("committed tx/s")
    rate.set_xlabel("seconds since the load started")
    rate.set_xlim(0, end)

    bands = report.bands()
    for n, (start, stop, command) in enumerate(bands):
        colour = BAND_COLOURS[n % len(BAND_COLOURS)]
        for axes in (heights, rate):
            if stop is None:
                axes.axvline(start, color=colour, linewidth=1.2, alpha=0.7)
            else:
                axes.axvspan(start, stop, color=colour, alpha=0.14, linewidth=0)
        level = 0.97 - 0.07 * (n % 4)
        heights.text(
            start,
            level,
            f" {command}",
            transform=heights.get_xaxis_transform(),
            fontsize=7,
            color=colour,
            va="top",
        )
    verdict = "PASS" if report.ok else "FAIL"
    heights.set_title(
        f"{report.scenario.name}: {report.scenario.validators} validators, "
        f"{report.scenario.load.rate} tx/s offered, seed {report.seed} — {verdict}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
