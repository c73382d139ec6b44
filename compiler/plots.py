"""Plots as pure functions of a report (and its target's CU colours): PNG bytes, deterministic."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend must be chosen first

from odimo.compiler.report import Report
from odimo.ir.text import printable
from odimo.targets import get_target

HOST_COLOR = "#7f7f7f"
MAX_LABEL = 60  # characters of a layer name on the x axis


def _label(name: str) -> str:
    """A name from the model or a file name as plot text: control characters escaped, bounded, and
    `$` escaped so matplotlib does not parse it as mathtext."""
    return printable(name, MAX_LABEL).replace("$", r"\$")


def split_plot(report: Report) -> bytes:
    """Paper Fig. 8/9: per layer, the fraction of channels on each CU, and cycles per CU (log)."""
    summary = report.summary
    rows = [r for r in summary.layers if r.role != "host"]
    cus = summary.cus
    colors = {cu.name: cu.color for cu in get_target(summary.target).cu_table} | {"host": HOST_COLOR}
    names = [_label(r.name) for r in rows]
    x = range(len(rows))
    # Fixed margins sized to the longest rotated name (0.055 in per x-small character): drawing the
    # figure once more for tight_layout cost more than the rest of a small model's compile.
    label_in = 0.3 + 0.055 * max((len(n) for n in names), default=0)
    width_in, height_in = max(6.0, 0.35 * len(rows) + 2), 5.4 + label_in
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width_in, height_in), sharex=True)
    fig.subplots_adjust(
        left=0.8 / width_in,
        right=1 - 0.2 / width_in,
        top=1 - 0.35 / height_in,
        bottom=label_in / height_in,
        hspace=0.08,
    )
    bottoms = [0.0] * len(rows)
    for cu in cus:
        fractions = [r.split.get(cu, 0) / sum(r.split.values()) for r in rows]
        top.bar(x, fractions, bottom=bottoms, color=colors.get(cu), label=cu)
        bottoms = [b + f for b, f in zip(bottoms, fractions)]
    top.set_ylabel("channel fraction")
    top.legend(loc="upper right", fontsize="small")
    top.set_title(f"{summary.target}: {_label(report.mapping)} — {summary.total.cycles:,.0f} cycles")
    width = 0.8 / len(cus)
    for k, cu in enumerate(cus):
        cycles = [max((r.cycles or {}).get(cu, 0.0), 0.0) for r in rows]
        bars = bottom.bar(
            [i + (k - (len(cus) - 1) / 2) * width for i in x], cycles, width=width, color=colors.get(cu), label=cu
        )
        for bar, row in zip(bars, rows):
            if row.latency_cycles and (row.cycles or {}).get(cu) == row.latency_cycles:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.2)
    bottom.set_yscale("symlog", linthresh=1.0)
    bottom.set_ylabel("cycles (bounding CU outlined)")
    bottom.set_xticks(list(x), names, rotation=90, fontsize="x-small")
    return png_bytes(fig, tight=False)


def png_bytes(fig: plt.Figure, tight: bool = True) -> bytes:
    """The figure as PNG bytes, closed; no software stamp, so equal figures give equal bytes."""
    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
