"""The CPU cost of streaming: the kit's run_df(stream=True) against a hand-written
`async for chunk in stream` loop over the same SDK, in the same run.

The spec measured: N=1000 rows, each reply streamed in 200 content chunks, concurrency
100, on the fake server (tests/fake_server, in its own process, no latency and no delay
between chunks unless --latency / --chunk-delay say otherwise). The kit's CPU per chunk
should be within 1.2x of the hand-written loop's. The contenders:

- `hand_written`: one openai.AsyncOpenAI (aiohttp transport, SDK retries off), a
  Semaphore(c), asyncio.gather over the frame's prompt column, each prompt streamed with
  `stream=True, stream_options={"include_usage": True}` and its content deltas joined,
  the answers assigned back as a new column;
- `kit`: `await kit.run_df(df, "prompt", stream=True, concurrency=c, cache=False, ...)`
  (the kit uses the same SDK with the same aiohttp transport), on its lean request path
  (the default: the SDK's request sent and its events read straight off its aiohttp
  session);
- `kit_sdk`: the same on the SDK's own request path (`OpenAIProvider(fast=False)`: the
  SDK sends each request and parses each event).

Each contender runs in a fresh process. Before its clock starts it imports everything,
sets up its client and makes one warm-up request (a streamed row like the others), so
first-use costs (lazy imports, the SDK's resource classes) stay off the clock for both.
The columns (medians over the rounds):

- wall: the run's wall time;
- CPU: the worker process's CPU time for the run (time.process_time: user + system, every
  thread of the process; the server's CPU is in another process and not counted);
- chunks: content chunks the server wrote during the run (its `/_stats` `chunks_sent`,
  read by the worker just before and just after the run: N x chunks when nothing fails);
  `seen` is the hand-written loop's own count of non-empty content deltas, a cross-check;
- CPU/chunk: CPU divided by chunks, in microseconds (every other SSE event of a stream,
  the role, finish and usage chunks, and the request itself are in it too);
- ok: rows answered in full.

The ratios printed last are the medians over the R interleaved rounds of each round's kit
(and kit_sdk) CPU/chunk over hand-written CPU/chunk (the spec wants at most 1.20 for kit).
This machine is shared and noisy: compare the ratios within one run, not absolute times.

    python benchmarks/streaming.py                    # the spec: about 1.5 minutes
    python benchmarks/streaming.py --n 100 --rounds 1  # a quick look, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from fake import call, serve

KEY = "bench-key"
MODEL = "bench"


def prompts(n: int, chunks: int) -> list[str]:
    """`[[tokens=K]]` makes the fake server's reply K words: K content chunks streamed."""
    return [f"question {i} [[tokens={chunks}]]" for i in range(n)]


def chunks_sent(server: str) -> int:
    return int(call(server, "/_stats")["chunks_sent"])


# -- contenders (each runs in its own process through `--worker`) ---------------------


async def hand_written(server: str, n: int, chunks: int, c: int) -> dict[str, Any]:
    """The cell people write today: one AsyncOpenAI, a Semaphore, asyncio.gather over the
    frame's prompt column, each reply read with `async for chunk in stream`."""
    import httpx
    import openai
    import pandas as pd

    df = pd.DataFrame({"prompt": prompts(n, chunks)})
    client = openai.AsyncOpenAI(
        base_url=server + "/v1",
        api_key=KEY,
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(),
    )
    semaphore = asyncio.Semaphore(c)
    seen = 0

    async def one(prompt: str) -> str | None:
        nonlocal seen
        async with semaphore:
            try:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": prompt}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                parts: list[str] = []
                async for chunk in stream:
                    if chunk.choices:
                        content = chunk.choices[0].delta.content
                        if content:
                            parts.append(content)
            except (openai.APIError, httpx.HTTPError):
                return None
            seen += len(parts)
            return "".join(parts)

    await one(f"warm-up [[tokens={chunks}]]")  # off the clock, as the kit's warm-up is
    seen = 0
    before = chunks_sent(server)
    start_cpu, start = time.process_time(), time.perf_counter()
    df["response"] = await asyncio.gather(*(one(p) for p in df["prompt"]))
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    sent = chunks_sent(server) - before
    await client.close()
    ok = int(df["response"].notna().sum())
    return {"wall": wall, "cpu": cpu, "chunks": sent, "seen": seen, "ok": ok}


async def kit_run(server: str, n: int, chunks: int, c: int, fast: bool = True) -> dict[str, Any]:
    import openai  # noqa: F401 - imported before the clock starts, as the hand-written cell does
    import pandas as pd

    import notebook_kit as kit

    df = pd.DataFrame({"prompt": prompts(n, chunks)})
    options: dict[str, Any] = {
        "provider": kit.OpenAIProvider(api_key=KEY, base_url=server + "/v1", fast=fast),
        "model": MODEL,
        "stream": True,
        "concurrency": c,
        "cache": False,  # timing comparisons never use the cache
        "progress": False,
    }
    run_df = kit.run_df  # the kit's modules load on first use: not on the clock
    warm = pd.DataFrame({"prompt": [f"warm-up [[tokens={chunks}]]"]})
    await run_df(warm, "prompt", **options)
    before = chunks_sent(server)
    start_cpu, start = time.process_time(), time.perf_counter()
    result = await run_df(df, "prompt", **options)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    sent = chunks_sent(server) - before
    ok = int((result["status"] == "ok").sum())
    return {"wall": wall, "cpu": cpu, "chunks": sent, "seen": None, "ok": ok}


async def kit_sdk(server: str, n: int, chunks: int, c: int) -> dict[str, Any]:
    return await kit_run(server, n, chunks, c, fast=False)


WORKERS = {"hand_written": hand_written, "kit": kit_run, "kit_sdk": kit_sdk}


def worker(args: argparse.Namespace) -> None:
    run = WORKERS[args.worker]
    print(json.dumps(asyncio.run(run(args.url, args.n, args.chunks, args.c))))


# -- the orchestra --------------------------------------------------------------------


def fake_server(latency: float, chunk_delay: float) -> contextlib.AbstractContextManager[str]:
    """The tests' fake server in its own process."""
    return serve("--seed", "1", "--latency", str(latency), "--chunk-delay", str(chunk_delay))


def contend(url: str, name: str, n: int, chunks: int, c: int) -> dict[str, Any]:
    call(url, "/_reset", {})
    command = [sys.executable, __file__, "--worker", name, "--url", url]
    command += ["--n", str(n), "--chunks", str(chunks), "--c", str(c)]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    stats = call(url, "/_stats")
    result.update(peak=stats["peak_in_flight"], cut=stats["streams_cut"])
    result["per_chunk"] = result["cpu"] / max(1, result["chunks"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=1000, help="rows")
    parser.add_argument("--chunks", type=int, default=200, help="content chunks per reply")
    parser.add_argument("--c", type=int, default=100, help="concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="server: to the first chunk")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="server: between chunks")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print(
        f"Streaming: N={args.n} rows x {args.chunks} content chunks, concurrency {args.c},"
        f" server latency {args.latency:g} s, chunk delay {args.chunk_delay:g} s,"
        f" {args.rounds} interleaved round(s), medians"
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in WORKERS}
    with fake_server(args.latency, args.chunk_delay) as url:
        for _ in range(args.rounds):
            for name in WORKERS:
                runs[name].append(contend(url, name, args.n, args.chunks, args.c))

    print(
        f"\n{'contender':13} {'wall':>8} {'CPU':>8} {'chunks':>8} {'seen':>8}"
        f" {'CPU/chunk':>10} {'ok':>6} {'peak':>5} {'cut':>4}"
    )
    for name, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        cpu = statistics.median(r["cpu"] for r in results)
        sent = int(statistics.median(r["chunks"] for r in results))
        seen_counts = [r["seen"] for r in results if r["seen"] is not None]
        seen = str(int(statistics.median(seen_counts))) if seen_counts else "-"
        per_chunk = 1e6 * statistics.median(r["per_chunk"] for r in results)
        ok = min(r["ok"] for r in results)
        peak = max(r["peak"] for r in results)
        cut = max(r["cut"] for r in results)
        print(
            f"{name:13} {wall:7.2f}s {cpu:7.2f}s {sent:8d} {seen:>8}"
            f" {per_chunk:8.1f}µs {ok:6d} {peak:5d} {cut:4d}"
        )

    hand = runs["hand_written"]
    for name in ("kit", "kit_sdk"):
        pairs = zip(runs[name], hand, strict=True)
        ratios = [ours["per_chunk"] / theirs["per_chunk"] for ours, theirs in pairs]
        each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(
            f"{name} / hand-written CPU per chunk {statistics.median(ratios):.2f}x"
            f" (per round: {each})"
        )
    print("spec: kit at most 1.20x")


if __name__ == "__main__":
    main()
