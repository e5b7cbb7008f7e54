"""The jobs of this process: `kit.jobs()`, `kit.last_job()`, and a cell's earlier job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from .job import Job

KEEP_FINISHED = 8  # finished jobs kept for kit.jobs(finished=True); running ones are all kept
_jobs: list[Job] = []  # the jobs of this process, the last one last


def remember(job: Job) -> None:
    _jobs.append(job)
    ended = [j for j in _jobs if not j.running]
    for old in ended[:-KEEP_FINISHED]:  # their frames are big: keep only the recent ones
        _jobs.remove(old)


def last_job() -> Job | None:
    """The job started last in this process (by start, run_df or run_df_sync)."""
    return _jobs[-1] if _jobs else None


def jobs(*, finished: bool = False) -> list[Job]:
    """The jobs of this process still running (`job.cancel()` stops one), oldest first;
    `finished=True` adds the recent ones that ended."""
    return [job for job in _jobs if finished or job.running]


def stop_the_cells_earlier_job(job: Job) -> str | None:
    """Re-running a cell stops the job it started before (it would go on spending with no
    panel left to see); the new panel says so."""
    earlier = [j for j in jobs() if job.cell is not None and j.cell == job.cell]
    what = [old.replaced() for old in earlier]
    if not earlier:
        return None
    done = sum(o.snapshot().done - o.snapshot().cancelled for o in earlier)
    names = ", ".join(o.report.run_id for o in earlier)
    return (
        f"Re-running this cell {what[-1]} the job it had started ({names}, {done} rows done); "
        "kit.jobs(finished=True) finds it."
    )


@contextlib.contextmanager
def told_in_one_line(job: Job) -> Iterator[None]:
    """An interrupt still ends the cell in error (queued cells stop), but a notebook shows
    one line about what was kept instead of a traceback through the kit."""
    try:
        yield
    except (asyncio.CancelledError, KeyboardInterrupt) as exc:
        snap = job.snapshot()
        line = (
            f"interrupted: {snap.done - snap.cancelled} rows done, {snap.cancelled} cancelled; "
            "the frame is in kit.last_result()"
        )
        running = [b.batch_id for b in snap.batches if not b.ended and b.state != "submitting"]
        if running:
            line = (
                f"stopped waiting; the batch jobs run on at the provider ({', '.join(running)}): "
                "run this cell again to collect their rows (nothing is paid twice), or "
                f"kit.attach({running[0]!r})"
            )
        exc._render_traceback_ = lambda: [line]  # type: ignore[union-attr]  # IPython shows it
        raise
