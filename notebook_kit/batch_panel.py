"""A batch job's panel: Stop, the rows read so far, and one line per provider batch in the
kit's words (submitting, queued, running, finishing, done, cancelling, cancelled, expired,
failed) with its counts, its age and when the provider gives up on it."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from .types import BatchStatus
from .ui import _JobPanel

if TYPE_CHECKING:
    from .frame_job import FrameJob
    from .reporting import Snapshot


class BatchPanel(_JobPanel):
    """`panel.stop` cancels the batches (what they finished is still read)."""

    def __init__(self, job: FrameJob, *, hint: str | None = None) -> None:
        import ipywidgets as widgets

        super().__init__(job, hint=hint)
        self.batches = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.stop, self.bar]),
                self.status,
                self.batches,
                self.hint,
                self.log,
            ]
        )
        self._watch_controls()

    def _controls(self) -> list[Any]:
        return [self.stop]  # a batch cannot be paused

    def _show_more(self, snap: Snapshot) -> None:
        now = time.time()
        lines = [html.escape(batch_line(batch, now)) for batch in snap.batches]
        text = "<br>".join(lines)
        if self.batches.value != text:
            self.batches.value = text


def batch_line(batch: BatchStatus, now: float) -> str:
    """One batch in words: `batch_abc running · 120/300 done, 2 failed · 3 min · expires in
    23 h`."""
    parts = [f"{batch.batch_id} {batch.state}"]
    if batch.total:
        failed = f", {batch.failed} failed" if batch.failed else ""
        parts.append(f"{batch.done}/{batch.total} done{failed}")
    if batch.created is not None:
        parts.append(_age(now - batch.created))
    if batch.expires_at is not None and not batch.ended:
        parts.append(f"expires in {_age(batch.expires_at - now)}")
    if batch.error:
        parts.append(batch.error)
    return " · ".join(parts)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
