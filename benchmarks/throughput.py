"""The kit's run_df against the hand-written asyncio.gather + Semaphore it replaces.

Each contender runs in a fresh process against one fake server (another process), and the
numbers printed are:

- makespan: wall time of the run;
- of ideal: the makespan a perfect client would reach for the latencies the server really
  drew (a greedy schedule of them on `concurrency` slots), divided by the real makespan;
- CPU/request: the client process's CPU time for the run divided by the requests sent;
- and for the rate-limit scenario, 429s received and rows lost.

This machine is shared and noisy: compare the ratios within one run, not absolute times.

    python benchmarks/throughput.py                  # both scenarios, about 3 minutes
    python benchmarks/throughput.py --n 500 --c 50 --rounds 1 --rate-n 0   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from fake import call, serve

KEY = "bench-key"


# -- contenders (each runs in its own process through `--worker`) ---------------------


async def hand_written(url: str, n: int, c: int, transport: str, retries: int) -> dict[str, Any]:
    """The cell people write today: one AsyncOpenAI, a Semaphore, asyncio.gather over the
    frame's prompt column, answers assigned back as a new column."""
    import openai
    import pandas as pd

    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})
    http = openai.DefaultAioHttpClient() if transport == "aiohttp" else None
    client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=retries, http_client=http)
    semaphore = asyncio.Semaphore(c)

    async def one(prompt: str) -> str | None:
        async with semaphore:
            try:
                reply = await client.chat.completions.create(
                    model="bench", messages=[{"role": "user", "content": prompt}]
                )
            except openai.APIError:
                return None
            return reply.choices[0].message.content

    start_cpu, start = time.process_time(), time.perf_counter()
    df["response"] = await asyncio.gather(*(one(p) for p in df["prompt"]))
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    await client.close()
    return {"wall": wall, "cpu": cpu, "ok": int(df["response"].notna().sum())}


def kit_run(url: str, n: int, c: int, rpm: float | None) -> dict[str, Any]:
    import openai  # noqa: F401 - imported before the clock starts, as the hand-written cell does
    import pandas as pd

    import notebook_kit as kit

    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})
    run_df_sync = kit.run_df_sync  # the kit's modules load on first use: not on the clock
    start_cpu, start = time.process_time(), time.perf_counter()
    result = run_df_sync(
        df,
        "prompt",
        base_url=url,
        api_key=KEY,
        model="bench",
        concurrency=c,
        rpm=rpm,
        progress=False,
        cache=False,  # timing comparisons never use the cache
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"wall": wall, "cpu": cpu, "ok": int((result["status"] == "ok").sum())}


def worker(args: argparse.Namespace) -> None:
    if args.worker == "kit":
        out = kit_run(args.url, args.n, args.c, args.rpm)
    else:
        transport, retries = args.worker.split(":")
        out = asyncio.run(hand_written(args.url, args.n, args.c, transport, int(retries)))
    print(json.dumps(out))


# -- the orchestra --------------------------------------------------------------------


def fake_server(*settings: str) -> contextlib.AbstractContextManager[str]:
    """The tests' fake server in its own process (latency lognormal, median 300 ms)."""
    return serve("--latency-median", "0.3", "--latency-sigma", "0.5", *settings)


def ideal_makespan(latencies: list[float], slots: int) -> float:
    """Greedy list schedule: each request starts on the slot that frees first."""
    free = [0.0] * slots
    for latency in latencies:
        heapq.heappush(free, heapq.heappop(free) + latency)
    return max(free)


def contend(url: str, name: str, n: int, c: int, rpm: float | None = None) -> dict[str, Any]:
    call(url, "/_reset", {})
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--url",
        url + "/v1",
        "--n",
        str(n),
        "--c",
        str(c),
    ]
    if rpm:
        command += ["--rpm", str(rpm)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = call(url, "/_stats")
    result.update(
        requests=stats["requests_total"],
        count_429=stats["count_429"],
        ideal=ideal_makespan(stats["latencies"], c),
        peak=stats["peak_in_flight"],
    )
    return result


CONTENDERS = {
    "hand-written, httpx2 (SDK default)": "httpx:0",
    "hand-written, aiohttp transport": "aiohttp:0",
    "notebook_kit run_df": "kit",
}


def scenario_throughput(url: str, n: int, c: int, rounds: int) -> None:
    print(
        f"\nThroughput: N={n}, concurrency={c}, latency lognormal median 300 ms (sigma 0.5),"
        f" {rounds} interleaved rounds, medians"
    )
    print(f"{'contender':38} {'makespan':>9} {'of ideal':>9} {'CPU/req':>9} {'ok':>6} {'peak':>5}")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in CONTENDERS}
    for _ in range(rounds):
        for label, name in CONTENDERS.items():
            runs[label].append(contend(url, name, n, c))
    for label, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        of_ideal = statistics.median(r["ideal"] / r["wall"] for r in results)
        cpu = statistics.median(1000 * r["cpu"] / r["requests"] for r in results)
        ok = min(r["ok"] for r in results)
        peak = max(r["peak"] for r in results)
        print(f"{label:38} {wall:8.2f}s {of_ideal:9.2f} {cpu:7.2f}ms {ok:6d} {peak:5d}")


def scenario_rate_limit(url: str, n: int) -> None:
    call(url, "/_config", {"rpm_limit": 600, "rate_window": 1.0})
    print(f"\nRate limit: N={n}, server enforces 600/min as 10 per 1 s window, concurrency 50")
    print(f"{'contender':38} {'makespan':>9} {'429s':>6} {'ok':>6} {'lost':>6}")
    runs = {
        "hand-written, SDK retries off": ("aiohttp:0", None),
        "hand-written, SDK default 2 retries": ("aiohttp:2", None),
        "notebook_kit run_df(rpm=600)": ("kit", 600.0),
    }
    for label, (name, rpm) in runs.items():
        r = contend(url, name, n, 50, rpm)
        lost = n - r["ok"]
        print(
            f"{label:38} {r['wall']:8.2f}s {r['count_429']:6d} {r['ok']:6d} "
            f"{lost:5d} ({100 * lost / n:.0f}%)"
        )
    call(url, "/_config", {"rpm_limit": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--c", type=int, default=200)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--rate-n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with fake_server("--seed", "1") as url:
        scenario_throughput(url, args.n, args.c, args.rounds)
        if args.rate_n:
            scenario_rate_limit(url, args.rate_n)


if __name__ == "__main__":
    main()
