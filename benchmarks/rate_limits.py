"""Rate limits: how close the kit runs to a limit, and how many 429s it earns on the way.

1. Told the limit (`rpm=R`) against a server enforcing R per minute as R/60 per second:
   the achieved rate (arrivals at the server) as a fraction of R, and the 429s.
2. An undisclosed limit (no rate headers, no rpm given): fixed concurrency, adaptive
   concurrency (AIMD) alone, and the learned rate (the default: AIMD on the rate, beside
   adaptive concurrency), each against the same server: 429s, makespan, and the achieved
   rate as a fraction of the server's real limit.
3. No limit at all: the same variants (a slow start would show).
4. No limit, but 3% of requests refused with a 429 at random (Retry-After 1 s): a learned
   rate that took those for a limit would crawl.

Cache off. Against the fake server in its own process; prints numbers, asserts nothing.

    python benchmarks/rate_limits.py            # about 3 minutes
    python benchmarks/rate_limits.py --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from throughput import KEY, call, fake_server

import notebook_kit as kit


def accepted_per_minute(stats: dict[str, Any]) -> float:
    """Requests the server accepted (not 429), per minute over the span of all arrivals."""
    arrivals = sorted(stats["arrivals"])
    if len(arrivals) < 2:
        return 0.0
    accepted = stats["requests_total"] - stats["count_429"]
    return accepted / (arrivals[-1] - arrivals[0]) * 60


def run(url: str, n: int, tag: str, **options: Any) -> dict[str, Any]:
    call(url, "/_reset", {})
    time.sleep(1.1)  # an empty window for every contender
    df = pd.DataFrame({"prompt": [f"{tag} question {i}" for i in range(n)]})
    start = time.perf_counter()
    result = kit.run_df_sync(
        df,
        "prompt",
        base_url=url + "/v1",
        api_key=KEY,
        model="bench",
        cache=False,
        progress=False,
        **options,
    )
    wall = time.perf_counter() - start
    stats = call(url, "/_stats")
    return {
        "wall": wall,
        "ok": int((result["status"] == "ok").sum()),
        "429": stats["count_429"],
        "requests": stats["requests_total"],
        "per_minute": accepted_per_minute(stats),
        "late_429": late_429s(stats),
    }


def late_429s(stats: dict[str, Any]) -> int:
    """429s answered more than 2 s after the first arrival (after the first burst)."""
    arrivals = stats["arrivals"]
    if not arrivals:
        return 0
    first = min(arrivals)
    return sum(1 for t in stats["rejections"] if t - first > 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rpm = 600
    told_n, hidden_n = (200, 150) if args.quick else (600, 300)
    with fake_server("--seed", "2", "--rpm-limit", str(rpm)) as url:
        print(
            f"\n1. Told the limit: rpm={rpm} against a server enforcing {rpm}/min "
            f"as {rpm // 60} per second; {told_n} rows, concurrency 50"
        )
        r = run(url, told_n, "told", concurrency=50, rpm=rpm)
        print(
            f"   {r['wall']:.1f} s, {r['per_minute']:.0f} requests/min = "
            f"{r['per_minute'] / rpm:.3f} of the limit, {r['429']} 429s, {r['ok']}/{told_n} ok"
        )

        call(url, "/_config", {"rate_headers": False})
        print(
            f"\n2. Undisclosed limit ({rpm}/min, no headers, no rpm given); "
            f"{hidden_n} rows, concurrency 50"
        )
        header = f"   {'':28} {'makespan':>9} {'429s':>6} {'after 2 s':>9} {'requests':>9}"
        print(header + f" {'of limit':>9} {'ok':>5}")
        variants = (
            ("fixed concurrency", {"adaptive": False, "learn_rate": False}),
            ("adaptive concurrency", {"adaptive": True, "learn_rate": False}),
            ("learned rate (default)", {}),
        )
        for label, options in variants:
            r = run(url, hidden_n, label, concurrency=50, **options)
            print(
                f"   {label:28} {r['wall']:8.1f}s {r['429']:6d} {r['late_429']:9d} "
                f"{r['requests']:9d} {r['per_minute'] / rpm:9.3f} {r['ok']:5d}"
            )

        call(url, "/_config", {"rpm_limit": None})
        print(f"\n3. No limit at all: {hidden_n} rows, concurrency 50 (a slow start would show)")
        for label, options in variants:
            r = run(url, hidden_n, label, concurrency=50, **options)
            print(f"   {label:28} {r['wall']:8.2f}s {r['429']:6d}")

        call(url, "/_config", {"rate_429": 0.03})
        print(f"\n4. No limit, 3% random 429s: {hidden_n} rows, concurrency 50")
        for label, options in variants:
            r = run(url, hidden_n, label, concurrency=50, **options)
            print(f"   {label:28} {r['wall']:8.2f}s {r['429']:6d} {r['ok']:5d}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
