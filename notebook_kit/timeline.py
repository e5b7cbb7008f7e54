"""A picture of a run: one bar per request, and the number of requests in flight under it.

Needs matplotlib (`pip install "notebook_kit[plot]"`). The times come from the run report
the engine recorded (`kit.report(result)`), not from the frame's attrs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .errors import ConfigError
from .history import report_of
from .reporting import RunReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = {"ok": "#2e7d32", "rate_limit": "#f9a825", "cancelled": "#6a1b9a"}
ERROR_COLOUR = "#c62828"
WAIT_COLOUR = "#bdbdbd"
PAUSE_COLOUR = "#90caf9"
STEP_COLOURS = ("#2e7d32", "#1565c0", "#ef6c00", "#6d4c41", "#00838f", "#ad1457", "#9e9d24")


def in_flight(attempts: pd.DataFrame) -> tuple[list[float], list[int]]:
    """Requests in flight over time, as the steps of a staircase."""
    events = sorted([(t, 1) for t in attempts["start_s"]] + [(t, -1) for t in attempts["end_s"]])
    times, levels, level = [0.0], [0], 0
    for time, step in events:
        level += step
        times.append(time)
        levels.append(level)
    return times, levels


def plot_timeline(run: pd.DataFrame | RunReport, *, max_rows: int = 400) -> Figure:
    """One bar per request from start to end, coloured by outcome (a pipeline's successful
    requests by step); waits between a row's attempts as thin grey lines; below, requests
    in flight and the concurrency limit (a pipeline's steps each have their own: not drawn)."""
    try:
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigError(
            'plot_timeline needs matplotlib: pip install "notebook_kit[plot]"'
        ) from None
    report = run if isinstance(run, RunReport) else report_of(run)
    attempts = report.attempts()
    if attempts.empty:
        raise ConfigError("this run sent no requests: there is nothing to draw")
    rows = sorted(attempts["row"].unique())[:max_rows]
    shown = attempts[attempts["row"].isin(rows)]
    place = {row: i for i, row in enumerate(rows)}
    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6), gridspec_kw={"height_ratios": [3, 1]}
    )
    for row, group in shown.groupby("row"):
        y = place[row]
        ends = group["end_s"].tolist()
        starts = group["start_s"].tolist()
        for end, next_start in zip(ends, starts[1:], strict=False):
            top.plot([end, next_start], [y, y], color=WAIT_COLOUR, linewidth=0.8)
    steps = list(dict.fromkeys(shown["step"])) if "step" in shown else []
    by_step = {step: STEP_COLOURS[i % len(STEP_COLOURS)] for i, step in enumerate(steps)}
    colours = [
        by_step[step] if steps and outcome == "ok" else COLOURS.get(outcome, ERROR_COLOUR)
        for outcome, step in zip(
            shown["outcome"], shown["step"] if steps else shown["outcome"], strict=True
        )
    ]
    visible = float(attempts["end_s"].max()) / 300  # an instant 429 still shows as a tick
    top.barh(
        [place[r] for r in shown["row"]],
        (shown["end_s"] - shown["start_s"]).clip(lower=visible),
        left=shown["start_s"],
        height=0.8,
        color=colours,
    )
    top.set_ylabel("row" if len(rows) == attempts["row"].nunique() else f"first {len(rows)} rows")
    top.invert_yaxis()
    oks = [Patch(color=c, label=f"ok: {s}") for s, c in by_step.items()]
    top.legend(
        handles=[
            *(oks or [Patch(color=COLOURS["ok"], label="ok")]),
            Patch(color=COLOURS["rate_limit"], label="429"),
            Patch(color=ERROR_COLOUR, label="other error"),
            Patch(color=COLOURS["cancelled"], label="cancelled (stop, interrupt)"),
            Patch(color=WAIT_COLOUR, label="wait before a retry"),
        ],
        loc="upper right",
        fontsize="small",
    )
    times, levels = in_flight(attempts)
    bottom.step(times, levels, where="post", label="in flight")
    if report.limit_changes:
        limit_t = [t for t, _ in report.limit_changes] + [max(attempts["end_s"])]
        limit_v = [v for _, v in report.limit_changes] + [report.limit_changes[-1][1]]
        bottom.step(limit_t, limit_v, where="post", linestyle="--", label="concurrency limit")
    for number, (start, end) in enumerate(report.pauses):
        label = "paused" if number == 0 else None
        bottom.axvspan(start, end, color=PAUSE_COLOUR, alpha=0.4, label=label)
    bottom.set_xlabel("seconds since the run started")
    bottom.set_ylabel("requests")
    bottom.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    plt.close(fig)  # shown by the notebook as the cell's value, not twice
    return fig
