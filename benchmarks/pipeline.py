"""A three-step pipeline: the kit's run_pipeline against the two hand-written schemes that
respect every step's concurrency limit, and against a zero-overhead simulation of each.

The spec measured: three steps over N=300 rows, per-step latency lognormal (sigma 0.5)
with medians 300/900/300 ms, per-step concurrency 20/10/20. The kit's wall time should be
within 1.10x of the pipelined ideal (about 32 s) and below both hand-written alternatives:

- `one_semaphore`: one coroutine per row making its three calls in turn under one
  Semaphore(10), the largest that is within every step's limit (ideal about 52 s);
- `barriers`: stage by stage, an asyncio.gather per step under that step's semaphore
  (20, 10, 20), each stage waiting for the whole previous one (ideal about 43 s).

The fake server (tests/fake_server, in its own process) serves the three steps as three
models, "facts", "draft" and "review", each with its own latency (`model_latency`). Each
contender runs in a fresh process. The columns:

- wall: the run's wall time, imports and client set-up off the clock;
- own ideal: the contender's own scheme simulated with zero overhead on the latencies the
  server drew in that run, each attributed to its (row, step) by the prompt it answered
  (marked * where that failed: then on a seeded draw from the same distributions);
- pipelined ideal: the pipelined scheme simulated on the same latencies: each step a FIFO
  queue with its concurrency in slots, a row entering the next step's queue as soon as its
  previous step ends, nothing else in between;
- of pipelined: wall / pipelined ideal (the spec wants the kit's at most 1.10);
- ok: rows whose three calls all succeeded; peaks: the most requests of each step the
  server saw in flight at once (at most 20/10/20 for a scheme that respects the limits).

With --rounds R the contenders run in R interleaved rounds and the figures are medians.
The ideals of a seeded draw (the same for every run) are printed above the table. This
machine is shared and noisy: compare the ratios within one run, not absolute times.

    python benchmarks/pipeline.py                          # the spec: about 7 minutes
    python benchmarks/pipeline.py --rounds 1               # about 2.5 minutes
    python benchmarks/pipeline.py --n 60 --scale 0.2 --rounds 1   # a quick look, seconds
    python benchmarks/pipeline.py --contenders one_semaphore,barriers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from fake import call, serve

KEY = "bench-key"
SIGMA = 0.5
# (model, median latency in seconds, concurrency) of each step, in order
STEPS: tuple[tuple[str, float, int], ...] = (
    ("facts", 0.3, 20),
    ("draft", 0.9, 10),
    ("review", 0.3, 20),
)
ONE_SEMAPHORE = min(c for _, _, c in STEPS)  # the largest single limit within every step's
FACTS = "List 5 facts about {topic}."
DRAFT = "Write on {topic} using:\n{facts}"
REVIEW = "Grade:\n{draft}"
SEED = 0  # of the seeded draw the ideals above the table use

Latencies = list[tuple[float, ...]]  # per row, the latency of each step


# -- contenders (each runs in its own process through `--worker`) ---------------------


def topics(n: int) -> list[str]:
    return [f"topic {i}" for i in range(n)]


async def kit_pipeline(url: str, n: int) -> dict[str, Any]:
    """The kit: one run_pipeline call with each step's own model and concurrency."""
    import openai  # noqa: F401 - imported before the clock starts, as the hand-written ones are
    import pandas as pd

    import notebook_kit as kit

    df = pd.DataFrame({"topic": topics(n)})
    steps = [
        kit.Step("facts", template="List 5 facts about {topic}.", model="facts", concurrency=20),
        kit.Step(
            "draft", template="Write on {topic} using:\n{facts}", model="draft", concurrency=10
        ),
        kit.Step("review", template="Grade:\n{draft}", model="review", concurrency=20),
    ]
    run_pipeline = kit.run_pipeline  # the kit's modules load on first use: not on the clock
    start = time.perf_counter()
    result = await run_pipeline(
        df,
        steps,
        provider="openai",
        base_url=url,
        api_key=KEY,
        cache=False,  # timing comparisons never use the cache
        progress=False,
    )
    wall = time.perf_counter() - start
    return {"wall": wall, "ok": int((result["status"] == "ok").sum())}


async def ask(client: Any, model: str, prompt: str) -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return str(reply.choices[0].message.content or "")


async def one_semaphore(url: str, n: int) -> dict[str, Any]:
    """One coroutine per row, its three calls in turn, all rows under one Semaphore(10)."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=KEY)
    semaphore = asyncio.Semaphore(ONE_SEMAPHORE)

    async def row(topic: str) -> bool:
        async with semaphore:
            try:
                facts = await ask(client, "facts", FACTS.format(topic=topic))
                draft = await ask(client, "draft", DRAFT.format(topic=topic, facts=facts))
                await ask(client, "review", REVIEW.format(draft=draft))
            except openai.APIError:
                return False
            return True

    start = time.perf_counter()
    done = await asyncio.gather(*(row(topic) for topic in topics(n)))
    wall = time.perf_counter() - start
    await client.close()
    return {"wall": wall, "ok": sum(done)}


async def barriers(url: str, n: int) -> dict[str, Any]:
    """Stage by stage: one asyncio.gather per step under that step's semaphore."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=KEY)

    async def stage(model: str, prompts: list[str | None], limit: int) -> list[str | None]:
        semaphore = asyncio.Semaphore(limit)

        async def one(prompt: str | None) -> str | None:
            if prompt is None:  # the row failed an earlier step
                return None
            async with semaphore:
                try:
                    return await ask(client, model, prompt)
                except openai.APIError:
                    return None

        return await asyncio.gather(*(one(prompt) for prompt in prompts))

    rows = topics(n)
    (facts_model, _, facts_c), (draft_model, _, draft_c), (review_model, _, review_c) = STEPS
    start = time.perf_counter()
    facts = await stage(facts_model, [FACTS.format(topic=t) for t in rows], facts_c)
    pairs = zip(rows, facts, strict=True)
    asks = [None if f is None else DRAFT.format(topic=t, facts=f) for t, f in pairs]
    drafts = await stage(draft_model, asks, draft_c)
    reviews = await stage(
        review_model, [None if d is None else REVIEW.format(draft=d) for d in drafts], review_c
    )
    wall = time.perf_counter() - start
    await client.close()
    return {"wall": wall, "ok": sum(r is not None for r in reviews)}


WORKERS = {"kit": kit_pipeline, "one_semaphore": one_semaphore, "barriers": barriers}


def worker(args: argparse.Namespace) -> None:
    print(json.dumps(asyncio.run(WORKERS[args.worker](args.url, args.n))))


# -- zero-overhead simulations ----------------------------------------------------------


def slots_makespan(latencies: Sequence[float], slots: int) -> float:
    """Greedy list schedule: each job, in order, starts on the slot that frees first."""
    free = [0.0] * slots
    for latency in latencies:
        heapq.heappush(free, heapq.heappop(free) + latency)
    return max(free)


def simulate_pipelined(latencies: Latencies) -> float:
    """Each step a FIFO queue served by its concurrency in slots; a row joins the next
    step's queue the moment its previous step ends."""
    ready = [0.0] * len(latencies)
    for step, (_, _, slots) in enumerate(STEPS):
        free = [0.0] * slots
        for row in sorted(range(len(ready)), key=lambda r: (ready[r], r)):
            start = max(ready[row], heapq.heappop(free))
            ready[row] = start + latencies[row][step]
            heapq.heappush(free, ready[row])
    return max(ready, default=0.0)


def simulate_one_semaphore(latencies: Latencies) -> float:
    return slots_makespan([sum(row) for row in latencies], ONE_SEMAPHORE)


def simulate_barriers(latencies: Latencies) -> float:
    return sum(
        slots_makespan([row[step] for row in latencies], slots)
        for step, (_, _, slots) in enumerate(STEPS)
    )


SCHEMES = {  # the scheme each contender follows, simulated
    "kit": simulate_pipelined,
    "one_semaphore": simulate_one_semaphore,
    "barriers": simulate_barriers,
}


def seeded_latencies(n: int, scale: float, seed: int = SEED) -> Latencies:
    """A draw from the server's distributions: per row, one latency per step."""
    rng = random.Random(seed)
    return [
        tuple(rng.lognormvariate(math.log(median * scale), SIGMA) for _, median, _ in STEPS)
        for _ in range(n)
    ]


ROW = re.compile(r"\btopic (\d+)\b")
STEP_PREFIXES = tuple(template.split("{", 1)[0] for template in (FACTS, DRAFT, REVIEW))


def drawn_latencies(stats: dict[str, Any], n: int) -> Latencies | None:
    """The latencies the server drew in a run, per (row, step), None if they cannot be
    attributed. The server records a request's last user message and then, with no await
    in between, the latency it draws: both lists are in the same order (no faults here)."""
    messages, latencies = stats["last_messages"], stats["latencies"]
    if len(messages) != len(latencies) or len(latencies) != n * len(STEPS):
        return None
    table: dict[tuple[int, int], float] = {}
    for message, latency in zip(messages, latencies, strict=True):
        text = message.strip()
        steps = [i for i, prefix in enumerate(STEP_PREFIXES) if text.startswith(prefix)]
        row = ROW.search(text)
        if len(steps) != 1 or row is None:
            return None
        table[int(row.group(1)), steps[0]] = latency
    if len(table) != n * len(STEPS):  # a (row, step) asked twice, another never
        return None
    return [tuple(table[row, step] for step in range(len(STEPS))) for row in range(n)]


# -- the orchestra --------------------------------------------------------------------


def fake_server(scale: float) -> contextlib.AbstractContextManager[str]:
    """The tests' fake server in its own process, one model per step."""
    table = {model: {"median": median * scale, "sigma": SIGMA} for model, median, _ in STEPS}
    return serve("--seed", "1", "--model-latency", json.dumps(table))


def contend(url: str, name: str, n: int, scale: float) -> dict[str, Any]:
    call(url, "/_reset", {})
    command = [sys.executable, __file__, "--worker", name, "--url", url + "/v1", "--n", str(n)]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    stats = call(url, "/_stats")
    latencies = drawn_latencies(stats, n)
    result["attributed"] = latencies is not None
    if latencies is None:
        latencies = seeded_latencies(n, scale)
    peaks = stats["peak_in_flight_by_model"]
    result.update(
        own=SCHEMES[name](latencies),
        pipelined=simulate_pipelined(latencies),
        requests=stats["requests_total"],
        peaks=[peaks.get(model, 0) for model, _, _ in STEPS],
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every latency")
    parser.add_argument(
        "--contenders",
        default=",".join(WORKERS),
        help="comma-separated, of: kit, one_semaphore, barriers",
    )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    names = [name for name in args.contenders.split(",") if name]
    unknown = set(names) - set(WORKERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")

    medians = "/".join(f"{1000 * median * args.scale:g}" for _, median, _ in STEPS)
    limits = "/".join(str(c) for _, _, c in STEPS)
    print(
        f"Pipeline: N={args.n}, 3 steps, latency lognormal (sigma {SIGMA}) medians {medians} ms,"
        f" concurrency {limits}, {args.rounds} interleaved round(s), medians"
    )
    seeded = seeded_latencies(args.n, args.scale)
    print(
        f"Ideals of a seeded draw (seed {SEED}): pipelined {simulate_pipelined(seeded):.2f}s,"
        f" one semaphore of {ONE_SEMAPHORE} {simulate_one_semaphore(seeded):.2f}s,"
        f" barriers {simulate_barriers(seeded):.2f}s"
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with fake_server(args.scale) as url:
        for _ in range(args.rounds):
            for name in names:
                runs[name].append(contend(url, name, args.n, args.scale))

    print(
        f"\n{'contender':15} {'wall':>9} {'own ideal':>10} {'pipelined':>10}"
        f" {'of pipelined':>13} {'ok':>5} {'peaks':>9}"
    )
    for name, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        own = statistics.median(r["own"] for r in results)
        pipelined = statistics.median(r["pipelined"] for r in results)
        ratio = statistics.median(r["wall"] / r["pipelined"] for r in results)
        mark = " " if all(r["attributed"] for r in results) else "*"
        ok = min(r["ok"] for r in results)
        peaks = "/".join(str(max(r["peaks"][step] for r in results)) for step in range(len(STEPS)))
        print(
            f"{name:15} {wall:8.2f}s {own:8.2f}s{mark} {pipelined:9.2f}s {ratio:12.2f}x"
            f" {ok:5d} {peaks:>9}"
        )
    if "kit" in runs:
        kit = statistics.median(r["wall"] for r in runs["kit"])
        ratio = statistics.median(r["wall"] / r["pipelined"] for r in runs["kit"])
        others = ", ".join(
            f"{name} {statistics.median(r['wall'] for r in runs[name]) / kit:.2f}x the kit's"
            for name in runs
            if name != "kit"
        )
        print(
            f"\nspec: the kit at {ratio:.2f}x of the pipelined ideal (at most 1.10)"
            + (f"; wall times {others} (above 1.00)" if others else "")
        )


if __name__ == "__main__":
    main()
