"""The kit's run_df against the hand-written asyncio.gather + Semaphore it replaces.

Each contender runs in a fresh process against one fake server (another process). The
matrix (`scenario_matrix`): C = 10, 50, 200 concurrent requests; zero latency, a fixed
100 ms, lognormal 300 ms (sigma 0.5); N rows; contenders interleaved round by round, each
against the same draws of latency (the server is re-seeded before every run):

- SDK pattern: one AsyncOpenAI on its aiohttp transport, retries off, a Semaphore and
  asyncio.gather over the frame's prompt column (the cell people write today);
- kit, SDK path: run_df with `OpenAIProvider(fast=False)`;
- kit, lean path: run_df with `OpenAIProvider(fast=True)`.

Printed per cell, medians of the rounds: makespan; of ideal (the makespan a perfect client
would reach for the latencies the server drew, a greedy schedule of them on C slots,
divided by the real one; at zero latency, requests per second instead); CPU per request
(the client process's CPU time over the requests the server saw); and each kit path's
ratios to the SDK pattern of the same round (efficiency, or throughput at zero latency,
and CPU), medians of those ratios. The machine is shared and noisy: read the ratios.

Then a rate-limit scenario: 429s received and rows lost against a 600/min limit.

    python benchmarks/throughput.py                        # the matrix, about 20 minutes
    python benchmarks/throughput.py --c 50 --latency zero --rounds 1 --rate-n 0  # a look
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
LATENCIES: dict[str, dict[str, Any]] = {
    "zero": {"latency": 0.0, "latency_median": None},
    "fixed 100 ms": {"latency": 0.1, "latency_median": None},
    "lognormal 300 ms": {"latency": 0.0, "latency_median": 0.3, "latency_sigma": 0.5},
}
CONTENDERS = {
    "SDK pattern (gather+Semaphore)": "aiohttp:0",
    "kit, SDK path (fast=False)": "kit:sdk",
    "kit, lean path (fast=True)": "kit:fast",
}


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


def kit_run(url: str, n: int, c: int, rpm: float | None, fast: bool | None) -> dict[str, Any]:
    import openai  # noqa: F401 - imported before the clock starts, as the hand-written cell does
    import pandas as pd

    import notebook_kit as kit

    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})
    provider = kit.OpenAIProvider(api_key=KEY, base_url=url, fast=fast)
    run_df_sync = kit.run_df_sync  # the kit's modules load on first use: not on the clock
    start_cpu, start = time.process_time(), time.perf_counter()
    result = run_df_sync(
        df,
        "prompt",
        provider=provider,
        model="bench",
        concurrency=c,
        rpm=rpm,
        progress=False,
        cache=False,  # timing comparisons never use the cache
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"wall": wall, "cpu": cpu, "ok": int((result["status"] == "ok").sum())}


def worker(args: argparse.Namespace) -> None:
    if args.worker.startswith("kit"):
        path = args.worker.partition(":")[2]
        fast = {"fast": True, "sdk": False}.get(path)  # "kit": the provider's default
        out = kit_run(args.url, args.n, args.c, args.rpm, fast)
    else:
        transport, retries = args.worker.split(":")
        out = asyncio.run(hand_written(args.url, args.n, args.c, transport, int(retries)))
    print(json.dumps(out))


# -- the orchestra --------------------------------------------------------------------


def fake_server(*settings: str) -> contextlib.AbstractContextManager[str]:
    """The tests' fake server in its own process."""
    return serve(*settings)


def ideal_makespan(latencies: list[float], slots: int) -> float:
    """Greedy list schedule: each request starts on the slot that frees first."""
    free = [0.0] * slots
    for latency in latencies:
        heapq.heappush(free, heapq.heappop(free) + latency)
    return max(free)


def contend(url: str, name: str, n: int, c: int, rpm: float | None = None) -> dict[str, Any]:
    call(url, "/_reset", {})
    command = [sys.executable, __file__, "--worker", name, "--url", url + "/v1"]
    command += ["--n", str(n), "--c", str(c)]
    if rpm:
        command += ["--rpm", str(rpm)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    stats = call(url, "/_stats")
    result.update(
        requests=stats["requests_total"],
        count_429=stats["count_429"],
        ideal=ideal_makespan(stats["latencies"], c),
        peak=stats["peak_in_flight"],
    )
    return result


def efficiency(result: dict[str, Any], zero: bool) -> float:
    """Of ideal; at zero latency (no ideal), requests per second."""
    return result["requests"] / result["wall"] if zero else result["ideal"] / result["wall"]


def scenario_matrix(url: str, n: int, cs: list[int], latencies: list[str], rounds: int) -> None:
    print(f"\nMatrix: N={n}, {rounds} interleaved rounds, medians; ratios to the SDK pattern")
    print(
        f"{'cell':24} {'contender':31} {'makespan':>9} {'of ideal':>9} {'CPU/req':>9} "
        f"{'eff x':>6} {'CPU x':>6} {'ok':>5} {'peak':>4}"
    )
    pattern = next(iter(CONTENDERS))
    for latency in latencies:
        zero = latency == "zero"
        for c in cs:
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in CONTENDERS}
            for _ in range(rounds):
                for label, name in CONTENDERS.items():
                    call(url, "/_config", {**LATENCIES[latency], "seed": 1})
                    runs[label].append(contend(url, name, n, c))
            for label, results in runs.items():
                eff = statistics.median(efficiency(r, zero) for r in results)
                cpu = statistics.median(1e6 * r["cpu"] / r["requests"] for r in results)
                pairs = list(zip(results, runs[pattern], strict=True))
                eff_x = statistics.median(
                    efficiency(r, zero) / efficiency(p, zero) for r, p in pairs
                )
                cpu_x = statistics.median(
                    (r["cpu"] / r["requests"]) / (p["cpu"] / p["requests"]) for r, p in pairs
                )
                shown = f"{eff:5.0f}/s" if zero else f"{eff:9.3f}"
                print(
                    f"{latency + f', C={c}':24} {label:31} "
                    f"{statistics.median(r['wall'] for r in results):8.2f}s {shown:>9} "
                    f"{cpu:7.0f}us {eff_x:6.3f} {cpu_x:6.2f} "
                    f"{min(r['ok'] for r in results):5d} {max(r['peak'] for r in results):4d}"
                )


def scenario_rate_limit(url: str, n: int) -> None:
    call(url, "/_config", {**LATENCIES["lognormal 300 ms"], "rpm_limit": 600, "rate_window": 1.0})
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
    parser.add_argument("--c", type=int, action="append", help="default: 10, 50 and 200")
    parser.add_argument("--latency", action="append", choices=list(LATENCIES))
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--rate-n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        args.c = args.c[0]  # a worker is given one
        worker(args)
        return
    with fake_server("--seed", "1") as url:
        cs, latencies = args.c or [10, 50, 200], args.latency or list(LATENCIES)
        scenario_matrix(url, args.n, cs, latencies, args.rounds)
        if args.rate_n:
            scenario_rate_limit(url, args.rate_n)


if __name__ == "__main__":
    main()
