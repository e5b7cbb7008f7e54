"""ipywidgets panels: the live controls of a job, and the session defaults (`kit.controls()`).

Widget callbacks may run on a kernel subshell thread, so they only hand changes to the job
(whose methods go through `loop.call_soon_threadsafe`). Progress and status reach the
browser as widget state only, pushed by one ticker a few times a second. Errors in
callbacks are shown in the panel, never swallowed.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .kernel import Shown, cell_number, publish_missing_idle
from .peek import MAX_ROWS as MAX_PEEK_ROWS, Peek, Tails
from .progress import Ticker

if TYPE_CHECKING:
    from .frame_job import FrameJob
    from .job import Job
    from .reporting import Snapshot
    from .session import SessionDefaults


def _options(current: str | None, *more: Sequence[str]) -> list[str]:
    seen = [current] if current else []
    for group in more:
        seen += [m for m in group if m not in seen]
    return seen


def concurrency_slider(start: int) -> Any:
    """The concurrency slider of a panel, starting at `start` (room to go up to 4x)."""
    import ipywidgets as widgets

    return widgets.IntSlider(
        value=start,
        min=1,
        max=max(64, 4 * start),
        description="concurrency",
        continuous_update=False,
    )


class _Callbacks:
    """Runs widget callbacks and shows their errors in an HTML line of the panel."""

    def __init__(self) -> None:
        import ipywidgets as widgets

        self.log = widgets.HTML()

    def guard(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(change: Any) -> None:
            try:
                callback(change)
            except Exception as exc:
                text = html.escape(f"{type(exc).__name__}: {exc}")
                self.log.value = f"<span style='color:#b00'>control failed: {text}</span>"

        return run


class _JobPanel(_Callbacks, Ticker):
    """What every job's panel has: Pause, Stop, the progress bar and the status line."""

    interval = 0.25  # seconds between two pushes of progress and status to the browser
    widget: Any  # the panel's box, made by each kind of panel

    def __init__(self, job: Job, *, hint: str | None = None) -> None:
        import ipywidgets as widgets

        super().__init__()
        self._job = job
        self.pause = widgets.ToggleButton(value=False, description="Pause", icon="pause")
        self.stop = widgets.Button(description="Stop", button_style="danger", icon="stop")
        total = len(job.frame)
        self.bar = widgets.IntProgress(value=0, min=0, max=max(total, 1), description=f"0/{total}")
        self.status = widgets.HTML("starting…")
        self.hint = widgets.HTML(f"<i>{html.escape(hint)}</i>" if hint else "")
        self.pause.observe(self.guard(self._on_pause), names="value")
        self.stop.on_click(self.guard(lambda _: job.cancel()))
        self._shown: list[Shown] = []
        self._error = ""  # why the run ended early, for the summary
        self.peek_box = widgets.HTML()  # the replies streaming now, when a run streams
        self.peek: Peek | None = None

    def _add_peek(self, job: Job, streaming: bool) -> None:
        """Watch the replies as they stream in (not for runs over 10,000 rows)."""
        if streaming and len(job.frame) <= MAX_PEEK_ROWS:
            self.peek = Peek(self._show_peek)
            job.subscribe(self.peek.handle, Peek.kinds)

    def _show_peek(self, tails: Tails) -> None:
        lines = [
            f"<b>{html.escape(where)}</b> …{html.escape(' '.join(text.split()))}"
            for where, text in tails
        ]
        inner = "<br>".join(lines).replace("$", "&#36;")  # no math typesetting
        self.peek_box.value = f"<div style='font-family:monospace'>{inner}</div>" if lines else ""

    def _controls(self) -> list[Any]:
        """The widgets a user changes (disabled once the run ends)."""
        return [self.pause, self.stop]

    def _watch_controls(self) -> None:
        for control in self._controls():
            publish_missing_idle(control)

    def _ipython_display_(self) -> None:
        self._shown_in = cell_number()
        self._shown.append(Shown(self.widget, self.summary()))

    def summary(self) -> tuple[str, str]:
        """The run in one line, as text and as HTML without dollar signs (a notebook's HTML
        output typesets the text between two of them as math)."""
        snap = self._job.snapshot()
        line = status_line(snap).replace("$", "USD ")
        if self._error:
            line += f" · {html.escape(self._error)}"
        text = "notebook_kit · " + html.unescape(line.replace("<b>", "").replace("</b>", ""))
        done, total = snap.done - snap.cancelled, max(snap.total, 1)
        bar = f"<progress value='{done}' max='{total}'></progress>"
        return text, f"<div class='notebook-kit-summary'>{bar} notebook_kit · {line}</div>"

    def show_again(self) -> None:
        """Another view of the live panel, unless the cell that showed it asks again."""
        if cell_number() != getattr(self, "_shown_in", None):
            self._ipython_display_()

    def _on_pause(self, change: dict[str, Any]) -> None:
        paused = bool(change["new"])
        self.pause.description = "Resume" if paused else "Pause"
        self.pause.icon = "play" if paused else "pause"
        if paused:
            self._job.pause()
        else:
            self._job.resume()

    # -- the ticker, run on the job's loop ----------------------------------------------

    def tick(self, n: int) -> None:
        self.show()
        if self.peek is not None:
            self.peek.refresh()

    def closed(self, error: BaseException | None) -> None:
        if self.pause.value:  # a run that ended while paused: the button pops back out
            self.pause.value = False
        for control in self._controls():
            control.disabled = True
        self.peek_box.value = ""  # nothing streams any more
        self.show(None if isinstance(error, asyncio.CancelledError) else error)
        for shown in self._shown:  # the saved notebook keeps the final summary
            shown.update(self.summary(), live=False)

    def show(self, error: BaseException | None = None) -> None:
        """Push the job's snapshot to the bar and the status line: one message per widget
        that changed, none for the others (benchmarks/panel_cost.py measures the cost)."""
        snap = self._job.snapshot()
        finished = snap.done - snap.cancelled
        if self.bar.value != finished:
            with self.bar.hold_sync():  # the count and its label in one widget message
                self.bar.value = finished
                self.bar.description = f"{finished}/{snap.total}"
        self._show_more(snap)
        text = status_line(snap)
        if snap.budget_usd is not None:
            text += f"<br>budget ${snap.budget_usd:g}: spent ${snap.spent_usd:.4f}"
            text += f", reserved ${snap.reserved_usd:.4f}"
            if snap.state == "paused at the budget":
                text += " · <b>budget reached</b>: raise it with job.set_budget(...)"
        if error is not None:
            self._error = (str(error) or type(error).__name__).replace("$", "USD ")
            reason = html.escape(str(error) or type(error).__name__)
            text += f"<br><span style='color:#b00'>{reason}</span>"
        if self.status.value != text:
            self.status.value = text

    def _show_more(self, snap: Snapshot) -> None:
        """What a kind of panel shows besides the bar and the status line."""


class Panel(_JobPanel):
    """A job's live controls: `concurrency`, `model`, `pause`, `stop`, plus progress and status."""

    def __init__(
        self, job: FrameJob, *, models: Sequence[str] = (), hint: str | None = None
    ) -> None:
        import ipywidgets as widgets

        super().__init__(job, hint=hint)
        self.concurrency = concurrency_slider(job.config.limits.concurrency)
        self.model = widgets.Dropdown(
            options=_options(job.config.model, models, job.provider.models),
            value=job.config.model,
            description="model",
        )
        self.effective = widgets.HTML()  # the adaptive limit, when 429s pushed it lower
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.concurrency, self.effective, self.model]),
                widgets.HBox([self.pause, self.stop, self.bar]),
                self.status,
                self.peek_box,
                self.hint,
                self.log,
            ]
        )
        self._add_peek(job, job.config.stream)
        self._watch_controls()
        self.concurrency.observe(
            self.guard(lambda change: job.set_concurrency(change["new"])), names="value"
        )
        self.model.observe(self.guard(lambda change: job.set_model(change["new"])), names="value")

    def _controls(self) -> list[Any]:
        return [self.concurrency, self.model, *super()._controls()]

    def _show_more(self, snap: Snapshot) -> None:
        effective = ""
        if snap.limit < snap.target:
            effective = f"effective <b>{snap.limit}</b> (after 429s)"
        if self.effective.value != effective:
            self.effective.value = effective


def status_line(snap: Snapshot) -> str:
    """State, rows, ok / error / retrying / in flight, the recent rate, tokens, cost."""
    finished = snap.done - snap.cancelled
    over = snap.state in ("done", "stopped", "failed")
    parts = [f"<b>{snap.state}</b>", f"{finished}/{snap.total} rows", f"ok {snap.ok}"]
    parts.append(f"error {snap.error}")
    if over:  # what is left to say once it ended: how long it took
        parts.append(f"{snap.elapsed_s:.1f} s")
    else:
        parts += [
            f"retrying {snap.retrying}",
            f"in flight {snap.in_flight}",
            f"{snap.rate:.1f} rows/s",
        ]
    parts += [f"{snap.input_tokens + snap.output_tokens:,} tokens", snap.cost_text]
    if snap.cached:
        parts.append(f"cached {snap.cached}")
    if snap.cancelled:
        parts.append(f"cancelled {snap.cancelled}")
    if snap.skipped:
        parts.append(f"skipped {snap.skipped}")
    return " · ".join(parts)


class DefaultsPanel(_Callbacks):
    """`kit.controls()`: concurrency and model for the runs that start after a change."""

    def __init__(self, settings: SessionDefaults, *, models: Sequence[str]) -> None:
        import ipywidgets as widgets

        super().__init__()
        self.concurrency = widgets.IntSlider(
            value=settings.concurrency,
            min=1,
            max=max(64, 4 * settings.concurrency),
            description="concurrency",
            continuous_update=False,
        )
        choices = [("provider's default", None), *((m, m) for m in _options(None, models))]
        if settings.model and settings.model not in models:
            choices.append((settings.model, settings.model))
        self.model = widgets.Dropdown(options=choices, value=settings.model, description="model")
        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>notebook_kit defaults</b> for the next runs"),
                widgets.HBox([self.concurrency, self.model]),
                self.log,
            ]
        )
        for control in (self.concurrency, self.model):
            publish_missing_idle(control)

        def set_concurrency(change: dict[str, Any]) -> None:
            settings.concurrency = int(change["new"])

        def set_model(change: dict[str, Any]) -> None:
            settings.model = change["new"]

        self.concurrency.observe(self.guard(set_concurrency), names="value")
        self.model.observe(self.guard(set_model), names="value")
        self._settings = settings
        self._shown: list[Shown] = []
        for control in (self.concurrency, self.model):  # keep the saved summary current
            control.observe(lambda _: self._refresh(), names="value")

    def summary(self) -> tuple[str, str]:
        """What the saved notebook shows: the defaults as set last."""
        model = self._settings.model or "the provider's default"
        text = f"notebook_kit defaults: concurrency {self._settings.concurrency}, model {model}"
        return text, f"<div class='notebook-kit-summary'>{html.escape(text)}</div>"

    def _refresh(self) -> None:
        for shown in self._shown:
            shown.update(self.summary())

    def _ipython_display_(self) -> None:
        self._shown.append(Shown(self.widget, self.summary()))
