"""Engine-only cost per row: run_df on the demo model at zero latency, next to a bare gather.

Both contenders do the same per-row work a notebook cell would skip: none. The kit's
figure is its own overhead per row (planning, scheduling, results, frame build); the
bare gather shows what asyncio itself costs for one coroutine per row. `--schema` adds a
third: the same run with schema= (the demo's JSON answer, validation, typed columns);
`--pipeline` a one-step and a three-step run_pipeline over the same rows (three calls per
row: the target is under three times a single step's cost per row).

    python benchmarks/engine_overhead.py --n 20000 --rounds 5 [--schema] [--pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any, Literal

import pandas as pd
import pydantic

import notebook_kit as kit


class Route(pydantic.BaseModel):
    team: Literal["billing", "shipping", "technical", "account"]
    priority: int = pydantic.Field(ge=1, le=5)
    summary: str


def settled() -> None:
    """Earlier rounds' objects (the jobs and reports this process keeps) are collected or
    frozen, so that no round pays for another's garbage."""
    gc.collect()
    gc.freeze()


def kit_round(df: pd.DataFrame, **options: Any) -> float:
    settled()
    provider = kit.DemoProvider(latency=0)
    start = time.process_time()
    result = kit.run_df_sync(
        df, "prompt", provider=provider, concurrency=64, progress=False, cache=False, **options
    )
    cpu = time.process_time() - start
    assert (result["status"] == "ok").all()
    return cpu / len(df)


def pipeline_round(df: pd.DataFrame, steps: int) -> float:
    settled()
    provider = kit.DemoProvider(latency=0)
    chain = [
        kit.Step("facts", template="{prompt}", concurrency=64),
        kit.Step("draft", template="{facts}", concurrency=64),
        kit.Step("review", template="{draft}", concurrency=64),
    ][:steps]
    start = time.process_time()
    result = kit.run_pipeline_sync(df, chain, provider=provider, progress=False, cache=False)
    cpu = time.process_time() - start
    assert (result["status"] == "ok").all()
    return cpu / len(df)


def gather_round(df: pd.DataFrame) -> float:
    async def one(prompt: str) -> str:
        await asyncio.sleep(0)
        return prompt

    async def main() -> list[str]:
        semaphore = asyncio.Semaphore(64)

        async def limited(prompt: str) -> str:
            async with semaphore:
                return await one(prompt)

        return await asyncio.gather(*(limited(p) for p in df["prompt"]))

    settled()
    start = time.process_time()
    df = df.assign(response=asyncio.run(main()))
    return (time.process_time() - start) / len(df)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--schema", action="store_true", help="also time schema=Route")
    parser.add_argument("--pipeline", action="store_true", help="also time three steps")
    args = parser.parse_args()
    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(args.n)]})
    kit_round(df.head(100))  # warm up imports
    kits, gathers, typed, single, piped = [], [], [], [], []
    for _ in range(args.rounds):
        kits.append(kit_round(df))
        gathers.append(gather_round(df))
        if args.schema:
            typed.append(kit_round(df, schema=Route))
        if args.pipeline:
            single.append(pipeline_round(df, 1))
            piped.append(pipeline_round(df, 3))
    k, g = statistics.median(kits) * 1e6, statistics.median(gathers) * 1e6
    print(f"N={args.n}, {args.rounds} interleaved rounds, median CPU per row")
    print(f"notebook_kit run_df, demo model at zero latency: {k:6.1f} us/row")
    print(f"bare gather + Semaphore:                         {g:6.1f} us/row")
    print(f"kit minus bare gather:                           {k - g:6.1f} us/row")
    if typed:
        t = statistics.median(typed) * 1e6
        print(f"notebook_kit run_df with schema= (3 fields):     {t:6.1f} us/row")
        print(f"schema= minus plain run_df:                      {t - k:6.1f} us/row")
    if piped:
        one, p = statistics.median(single) * 1e6, statistics.median(piped) * 1e6
        print(f"notebook_kit run_pipeline, 1 step:               {one:6.1f} us/row")
        print(f"notebook_kit run_pipeline, 3 steps:              {p:6.1f} us/row")
        print(f"3 steps / 1 step (target under 3.0):             {p / one:6.2f}x")
        print(f"3 steps / run_df:                                {p / k:6.2f}x")


if __name__ == "__main__":
    main()
