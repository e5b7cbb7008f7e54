"""The command line: `python -m notebook_kit demo` runs a CSV through a model and reports."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

DEFAULT_TEMPLATE = (
    "Classify the sentiment of this product review as positive, negative or neutral. "
    "Answer with one word.\n\nReview: {review}"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebook_kit")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a CSV of prompts and write the result frame")
    demo.add_argument("--data", default="data/reviews.csv", help="CSV file to read")
    demo.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt with {column} fields")
    demo.add_argument("--rows", type=int, default=100, help="run only the first N rows")
    demo.add_argument("--concurrency", type=int, default=16)
    demo.add_argument("--provider", default="demo", help="demo (offline), openai or anthropic")
    demo.add_argument("--model", default=None)
    demo.add_argument("--latency", type=float, default=1.0, help="demo model's median latency")
    demo.add_argument("--out", default="reviews.result.csv", help="where to write the result")
    demo.add_argument(
        "--cache", action="store_true", help="use the reply cache (off: the timing is honest)"
    )
    args = parser.parse_args(argv)
    return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from .api import run_df_sync
    from .errors import NotebookKitError
    from .providers import DemoProvider

    provider = DemoProvider(latency=args.latency) if args.provider == "demo" else args.provider
    frame = pd.read_csv(args.data)
    started = time.perf_counter()
    try:
        result = run_df_sync(
            frame,
            template=args.template,
            provider=provider,
            model=args.model,
            concurrency=args.concurrency,
            limit=args.rows,
            cache=args.cache,
        )
    except NotebookKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    result.to_csv(args.out, index=False)
    meta = result.attrs["notebook_kit"]
    busy = float(result["latency_s"].sum(skipna=True))
    print(f"\n{len(result)} rows with {meta['provider']}:{meta['model']} in {wall:.1f} s")
    print(f"status: {meta['counts']}  requests sent: {meta['requests']}")
    cost = meta["cost_usd"]
    cost_text = "unknown (no price for this model)" if cost is None else f"${cost:.4f}"
    print(
        f"tokens: {meta['input_tokens']:,} in, {meta['output_tokens']:,} out; "
        f"cost {cost_text} (prices of {meta['prices_as_of']})"
    )
    if busy and wall:
        print(f"one at a time this would take about {busy:.1f} s ({busy / wall:.1f}x longer)")
    print(result[["response", "status", "attempts", "latency_s"]].head(5).to_string())
    print(f"wrote {args.out}")
    return 0
