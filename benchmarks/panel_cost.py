"""What the panel costs: the same run in a real Jupyter kernel with the panel on and off.

A kernel (ipykernel, started through jupyter_client by tests/kernel_harness.py, with this
process draining iopub as a browser would) runs `await kit.run_df(...)` over the fastest
request sources this machine has, in interleaved rounds (ABBA order): progress=True (the
ipywidgets panel, its ticker and, for a streaming run, its peek) and progress=False.

CPU is measured inside the kernel with `time.process_time()` around the await: that is
CLOCK_PROCESS_CPUTIME_ID, the CPU of every thread of the kernel process (the event loop
that runs the rows and the ticker, the IOPub thread that sends the widget messages,
libzmq's I/O threads, heartbeat, control) and of this run only, not the cell's own
overhead. It is read 0.1 s after the await, so that messages still queued at the end are
counted. The whole cell's CPU, read by this process from /proc/<pid>/stat, is printed as a
cross-check. The panel's share is (median CPU on - median CPU off) / median CPU on.

That difference is small and the machine is shared, so direct figures stand beside it: the
loop thread's CPU inside the panel's own methods (made and shown, ticks, closed; by
`time.thread_time()`), and the IOPub thread's CPU (/proc/self/task, 10 ms clock ticks), on
minus off. They leave out what the panel makes the run do elsewhere: for a streaming run,
what its peek costs the run (one StreamOpened per reply, read at each refresh), which the
contender "on, no peek" isolates.

Sources (each first finds its fastest concurrency and sizes N for about `--seconds`):
- demo: DemoProvider(latency=0), no HTTP: the highest row rate the kit reaches;
- fake: the tests' fake server at zero latency in its own process, the OpenAI provider;
- stream: the demo model streaming 40 words a reply at a word a microsecond (runs over
  10,000 rows show no peek, so N is at most that);
- fake-stream: the fake server streaming the same replies over HTTP.

    python benchmarks/panel_cost.py                     # all four sources, about 3 minutes
    python benchmarks/panel_cost.py --source demo --rounds 3 --seconds 2   # a quick look
    python benchmarks/panel_cost.py --profile           # cProfile one panel run's ticks
    python benchmarks/panel_cost.py --kit /tmp/before   # notebook_kit from a checkout there
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fake import call, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kernel_harness import Kernel

KEY = "bench-key"
MARK = "PANEL_COST "
WORDS = 40  # words of each streamed reply (the demo's reply_words; the fake echoes a prompt)

# Run once in the kernel: the measured run, and timers around the panel's own methods.
SETUP = r'''
import asyncio, gc, json, os, threading, time
import pandas as pd
import notebook_kit as kit
from notebook_kit import ui as _ui

_panel_cpu = {"start": 0.0, "ticks": 0.0, "close": 0.0, "n": 0}

def _timed(cls, name, bucket):
    inner = getattr(cls, name)
    def timed(self, *args, **kwargs):
        start = time.thread_time()
        try:
            return inner(self, *args, **kwargs)
        finally:
            _panel_cpu[bucket] += time.thread_time() - start
            _panel_cpu["n"] += bucket == "ticks"
    setattr(cls, name, timed)

_timed(_ui.Panel, "__init__", "start")
_timed(_ui._JobPanel, "_ipython_display_", "start")
_timed(_ui._JobPanel, "tick", "ticks")
_timed(_ui._JobPanel, "closed", "close")
_PEEK_ROWS = _ui.MAX_PEEK_ROWS

def _iopub_cpu():
    """CPU seconds of the IOPub thread so far (clock ticks: 10 ms)."""
    (thread,) = [t for t in threading.enumerate() if t.name == "IOPub"]
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

_frames = {}

def _frame(n, words):
    if (n, words) not in _frames:
        _frames.clear()
        filler = " lorem" * max(words - 4, 0)  # the fake server's reply echoes the prompt
        _frames[n, words] = pd.DataFrame({"prompt": [f"question {i}{filler}" for i in range(n)]})
    return _frames[n, words]

async def _bench(contender, n, concurrency, source, stream, profile=None):
    frame = _frame(n, _WORDS if stream else 0)
    if source == "demo":
        rate = 1e6 if stream else None  # a word a microsecond
        words = _WORDS if stream else None
        demo = kit.DemoProvider(latency=0, stream_rate=rate, reply_words=words)
        opts = dict(provider=demo)
    else:
        opts = dict(base_url=source, api_key=_KEY, model="bench")
    _ui.MAX_PEEK_ROWS = 0 if contender == "on, no peek" else _PEEK_ROWS
    gc.collect()
    gc.freeze()  # no run pays for an earlier run's garbage
    _panel_cpu.update(start=0.0, ticks=0.0, close=0.0, n=0)
    iopub0 = _iopub_cpu()
    loop0, cpu0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    result = await kit.run_df(
        frame, "prompt", concurrency=concurrency, progress=contender != "off", cache=False,
        stream=stream, **opts
    )
    wall = time.perf_counter() - wall0
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    await asyncio.sleep(0.1)  # messages still queued for the IOPub thread go out
    cpu, loop = time.process_time() - cpu0, time.thread_time() - loop0
    out = dict(
        wall=wall, cpu=cpu, loop=loop, iopub=_iopub_cpu() - iopub0,
        panel=_panel_cpu["start"] + _panel_cpu["ticks"] + _panel_cpu["close"],
        panel_start=_panel_cpu["start"], panel_ticks=_panel_cpu["ticks"],
        panel_close=_panel_cpu["close"], ticks=_panel_cpu["n"],
        ok=int((result["status"] == "ok").sum()), n=n,
    )
    print(_MARK + json.dumps(out))
'''


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a whole process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wire_size(msg: dict[str, Any]) -> int:
    """A message's size as the JSON parts the kernel signs and sends (plus buffers)."""
    parts = ("header", "parent_header", "metadata", "content")
    size = sum(len(json.dumps(msg[p], default=str)) for p in parts)
    return size + sum(len(b) for b in msg.get("buffers") or [])


PANEL_TYPES = ("comm_open", "comm_msg", "comm_close", "display_data", "update_display_data")


@dataclass(frozen=True)
class Source:
    name: str
    label: str
    stream: bool
    calibrate_n: int  # rows of each calibration run
    choices: tuple[int, ...]  # concurrency levels tried
    max_n: int | None = None  # the peek is shown up to notebook_kit.peek.MAX_ROWS rows

    @property
    def contenders(self) -> tuple[str, ...]:
        return ("on", "off", "on, no peek") if self.stream else ("on", "off")


SOURCES = {
    "demo": Source("demo", "demo model at zero latency (no HTTP)", False, 20_000, (16, 64, 256)),
    "fake": Source("fake", "fake OpenAI server at zero latency (HTTP)", False, 1_000, (16, 64)),
    "stream": Source(
        "stream",
        f"demo model streaming {WORDS} words a reply, a word a microsecond (no HTTP)",
        True,
        2_000,
        (64, 256),
        10_000,
    ),
    "fake-stream": Source(
        "fake-stream",
        f"fake OpenAI server streaming {WORDS}-word replies at zero latency (HTTP)",
        True,
        300,
        (16, 64),
        10_000,
    ),
}


class Bench:
    """One kernel, the measured runs, and the iopub messages of each run's cell."""

    def __init__(self, python: str, kit: str | None = None) -> None:
        self.kernel = Kernel(python, env={"PYTHONPATH": kit} if kit else None)
        self.kernel.run(f"_KEY, _MARK, _WORDS = {KEY!r}, {MARK!r}, {WORDS}\n" + SETUP)
        self.pid = int(self.kernel.run("print(os.getpid())").strip())
        self.url: str | None = None  # the fake server's, while it runs

    def run(
        self, contender: str, n: int, concurrency: int, source: Source, profile: str = ""
    ) -> dict[str, Any]:
        where = "demo"
        if source.name.startswith("fake"):
            assert self.url is not None
            call(self.url, "/_reset", {})
            where = self.url + "/v1"
        before = proc_cpu(self.pid)
        code = (
            f"await _bench({contender!r}, {n}, {concurrency}, {where!r}, {source.stream},"
            f" {profile!r})"
        )
        cell = self.kernel.execute(code, timeout=600)
        whole = proc_cpu(self.pid) - before
        reply = self.kernel.reply(cell)
        output = self.kernel.output(cell)
        assert reply["status"] == "ok", f"{reply.get('ename')}: {reply.get('evalue')}\n{output}"
        assert MARK in output, output
        result: dict[str, Any] = json.loads(output.rsplit(MARK, 1)[1].splitlines()[0])
        assert result["ok"] == n, result
        messages = [m for m in self.kernel.iopub if m["parent_header"].get("msg_id") == cell]
        panel = [m for m in messages if m["msg_type"] in PANEL_TYPES]
        result.update(
            whole=whole,
            updates=sum(m["msg_type"] == "comm_msg" for m in panel),
            opens=sum(m["msg_type"] == "comm_open" for m in panel),
            displays=sum("display_data" in m["msg_type"] for m in panel),
            bytes=sum(wire_size(m) for m in panel),
        )
        self.kernel.iopub.clear()  # the next run's messages only
        return result

    @contextlib.contextmanager
    def fake_server(self) -> Iterator[None]:
        with serve("--latency", "0") as url:
            self.url = url
            try:
                yield
            finally:
                self.url = None

    def close(self) -> None:
        self.kernel.close()


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """Median (min-max)."""
    med, lo, hi = (scale * v for v in (statistics.median(values), min(values), max(values)))
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def measure(bench: Bench, source: Source, *, rounds: int, seconds: float) -> None:
    warm = max(source.calibrate_n // 4, 100)
    for contender in source.contenders:  # imports, widgets, the SDK's client
        bench.run(contender, warm, source.choices[0], source)
    rates = {}  # rows/s with the panel off, best of two runs
    for c in source.choices:
        walls = [bench.run("off", source.calibrate_n, c, source)["wall"] for _ in range(2)]
        rates[c] = source.calibrate_n / min(walls)
    concurrency = max(rates, key=rates.__getitem__)
    n = max(source.calibrate_n, round(rates[concurrency] * seconds / 100) * 100)
    n = min(n, source.max_n or n)
    print(f"\n{source.label}")
    tried = ", ".join(f"C={c}: {r:,.0f}" for c, r in rates.items())
    print(f"  rows/s by concurrency (panel off, N={source.calibrate_n:,}): {tried}")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in source.contenders}
    for i in range(rounds):
        order = source.contenders if i % 2 == 0 else source.contenders[::-1]  # ABBA
        for contender in order:
            runs[contender].append(bench.run(contender, n, concurrency, source))
    print(f"  N={n:,}, concurrency {concurrency}, {rounds} interleaved rounds: median (min-max)")
    report(runs)


def report(runs: dict[str, list[dict[str, Any]]]) -> None:
    on, off = runs["on"], runs["off"]
    names = [c for c in runs if c != "on"] + ["on"]

    def med(key: str, which: list[dict[str, Any]]) -> float:
        return statistics.median(r[key] for r in which)

    def line(name: str, values: list[str]) -> None:
        print(f"  {name:31}" + "".join(f"{v:>23}" for v in values))

    def row(name: str, key: str, scale: float = 1.0, digits: int = 2) -> None:
        line(name, [spread([r[key] for r in runs[c]], scale, digits) for c in names])

    line("", [f"panel {c}" for c in names])
    line("rows/s", [spread([r["n"] / r["wall"] for r in runs[c]], digits=0) for c in names])
    row("wall per run, s", "wall")
    row("kernel CPU per run, s", "cpu")
    row("  loop thread, s", "loop")
    row("  IOPub thread, s", "iopub")
    row("  panel's methods (loop), ms", "panel", 1e3, 1)
    row("whole cell (/proc), s", "whole")
    cpu_on = med("cpu", on)
    for other in names[:-1]:
        pairs = [a["cpu"] - b["cpu"] for a, b in zip(on, runs[other], strict=True)]
        share = 100 * (cpu_on - med("cpu", runs[other])) / cpu_on
        print(
            f"  CPU on - CPU {other}: {share:+.2f} % of CPU on"
            f"  (paired differences: {spread(pairs, 1e3, 0)} ms)"
        )
    panel, iopub = med("panel", on), med("iopub", on) - med("iopub", off)
    print(
        f"  direct: panel's methods {1e3 * panel:.1f} ms + IOPub on-off {1e3 * iopub:+.0f} ms"
        f" = {100 * (panel + iopub) / cpu_on:.2f} % of CPU on"
    )
    wall, ticks = med("wall", on), med("ticks", on)
    start, tick, close = (1e3 * med(k, on) for k in ("panel_start", "panel_ticks", "panel_close"))
    print(
        f"  panel's methods: made and shown {start:.1f} ms, {ticks:.0f} ticks {tick:.1f} ms"
        f" ({tick / max(ticks, 1):.2f} ms each, {ticks / wall:.1f}/s), closed {close:.1f} ms"
    )
    updates = med("updates", on)
    print(
        f"  panel's iopub messages per run: {updates:.0f} widget updates"
        f" ({updates / wall:.1f}/s), {med('opens', on):.0f} comm_open,"
        f" {med('displays', on):.0f} display; {med('bytes', on) / 1e3:.1f} kB;"
        f" panel off: {max(r['updates'] + r['opens'] + r['displays'] for r in off)}"
    )


def profile(bench: Bench) -> None:
    """One demo run with the panel under cProfile in the kernel: the panel's part."""
    import pstats

    path = f"/tmp/panel_cost-{os.getpid()}.prof"
    bench.run("on", 1_000, 64, SOURCES["demo"])  # imports ipywidgets, off the profile
    bench.run("on", 100_000, 64, SOURCES["demo"], path)
    print("\ncProfile of one panel run (demo, N=100,000): the panel's functions")
    wanted = ("ui.py", "progress.py", "peek.py", "snapshot", "counts", "widget.py", "comm")
    pstats.Stats(path).sort_stats("cumulative").print_stats("|".join(wanted), 25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=",".join(SOURCES), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time of one run")
    parser.add_argument("--profile", action="store_true", help="cProfile one panel run")
    parser.add_argument("--python", default=sys.executable, help="the kernel's Python")
    parser.add_argument("--kit", help="a directory to import notebook_kit from (a before)")
    args = parser.parse_args()
    started = time.monotonic()
    bench = Bench(args.python, args.kit)
    try:
        version = bench.kernel.run("import ipykernel; print(ipykernel.__version__)").strip()
        where = bench.kernel.run("print(kit.__file__)").strip()
        print(f"ipykernel {version}, {os.cpu_count()} cores, {where}")
        if args.profile:
            profile(bench)
        for name in args.source.split(","):
            source = SOURCES[name]
            with bench.fake_server() if name.startswith("fake") else contextlib.nullcontext():
                measure(bench, source, rounds=args.rounds, seconds=args.seconds)
    finally:
        bench.close()
    print(f"\n({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
