"""A pipeline's panel: one line per step (its concurrency slider, progress and counts) above
the shared Pause, Stop, bar and status line of every job's panel."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .ui import _JobPanel, concurrency_slider

if TYPE_CHECKING:
    from .config import RunConfig
    from .pipeline_job import PipelineJob
    from .reporting import Snapshot


class PipelinePanel(_JobPanel):
    """A pipeline's controls: one line per step (its concurrency slider, progress and
    counts; `panel.steps["draft"].concurrency`), and the shared Pause and Stop."""

    def __init__(self, job: PipelineJob, *, hint: str | None = None) -> None:
        import ipywidgets as widgets

        super().__init__(job, hint=hint)
        self.steps: dict[str, StepLine] = {}
        for stage in job.plan.stages:
            line = StepLine(stage.name, len(job.frame), stage.config)
            if line.concurrency is not None:
                line.concurrency.observe(self.guard(self._slider(stage.name)), names="value")
            self.steps[stage.name] = line
        self.widget = widgets.VBox(
            [
                *(line.widget for line in self.steps.values()),
                widgets.HBox([self.pause, self.stop, self.bar]),
                self.status,
                self.peek_box,
                self.hint,
                self.log,
            ]
        )
        self._add_peek(job, any(s.config and s.config.stream for s in job.plan.stages))
        self._watch_controls()

    def _slider(self, step: str) -> Callable[[Any], None]:
        return lambda change: self._job.set_concurrency(change["new"], step=step)

    def _controls(self) -> list[Any]:
        sliders = [line.concurrency for line in self.steps.values() if line.concurrency]
        return [*sliders, *super()._controls()]

    def _show_more(self, snap: Snapshot) -> None:
        for step in snap.steps:
            if step.step in self.steps:
                self.steps[step.step].show(step)


class StepLine:
    """One step of a pipeline in its panel: name, slider (model steps), bar, counts."""

    def __init__(self, name: str, total: int, config: RunConfig | None) -> None:
        import ipywidgets as widgets

        self.concurrency = None
        if config is not None:
            self.concurrency = concurrency_slider(config.limits.concurrency)
        self.bar = widgets.IntProgress(value=0, min=0, max=max(total, 1))
        self.counts = widgets.HTML()
        label = widgets.HTML(f"<b>{html.escape(name)}</b>", layout=widgets.Layout(width="8em"))
        parts = [label, *([self.concurrency] if self.concurrency else []), self.bar, self.counts]
        self.widget = widgets.HBox(parts)

    def show(self, snap: Snapshot) -> None:
        finished = snap.done - snap.cancelled
        if self.bar.value != finished:
            self.bar.value = finished
        parts = [f"done {finished}", f"ok {snap.ok}", f"error {snap.error}"]
        if snap.skipped:
            parts.append(f"skipped {snap.skipped}")
        if snap.target:
            parts.append(f"in flight {snap.in_flight}")
            if snap.limit < snap.target:
                parts.append(f"effective <b>{snap.limit}</b> (after 429s)")
        text = " · ".join(parts)
        if self.counts.value != text:
            self.counts.value = text
