"""What each way of sending a request costs: CPU per request at zero latency, through the
kit's run_df, for the request paths measured when the lean path was chosen (issue 15).

- sdk: the SDK's raw-response API, replies parsed by json (the kit's `fast=False`);
- sdk+orjson: the same, replies parsed by orjson;
- httpx raw: one prebuilt request through the SDK's httpx client (its aiohttp transport);
- aiohttp: the lean path, the SDK's request straight through its aiohttp session
  (the kit's `fast=True`); aiohttp+orjson: the same, replies parsed by orjson;
- and two references outside the kit: the hand-written AsyncOpenAI cell, and a bare
  aiohttp loop (the floor).

Each runs in a fresh process against one fake server (another process), interleaved
rounds, medians: compare the ratios, this machine is shared and noisy.

    python benchmarks/request_paths.py --n 2000 --c 50 --rounds 3   # orjson: pip install it
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from fake import call, serve

KEY = "bench-key"
PATHS = ("sdk", "sdk+orjson", "httpx raw", "aiohttp", "aiohttp+orjson", "hand-written", "bare")


def with_orjson() -> None:
    """Replies parsed by orjson (json's reader on what orjson refuses, for its errors)."""
    import orjson

    from notebook_kit.providers import replies

    slow = replies.reply_json

    def reply_json(content: bytes, request_id: str | None, redact: Any) -> dict[str, Any]:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            return slow(content, request_id, redact)
        if isinstance(body, dict) and body.get("error") is None and body.get("type") != "error":
            return body
        return slow(content, request_id, redact)

    for module in ("openai_chat", "anthropic_messages"):
        sys.modules[f"notebook_kit.providers.{module}"].reply_json = reply_json


def with_httpx_raw() -> None:
    """The lean path's prebuilt request sent through the SDK's httpx client instead."""
    from notebook_kit.providers import fast_http

    async def post(self: Any, body: dict[str, Any]) -> tuple[bytes, Any]:
        data = fast_http._ENCODE(body).encode()
        client = self._client._client
        reply = await client.post(self._url, content=data, headers=self._headers)
        if reply.status_code >= 400:
            raise self._client._make_status_error_from_response(reply)
        return reply.content, reply.headers

    fast_http.FastPost.post = post  # type: ignore[method-assign]


def kit_worker(url: str, n: int, c: int, path: str) -> dict[str, float]:
    import openai  # noqa: F401 - imported before the clock starts
    import pandas as pd

    import notebook_kit as kit
    from notebook_kit.providers import anthropic_messages, openai_chat  # noqa: F401

    if "orjson" in path:
        with_orjson()
    if path == "httpx raw":
        with_httpx_raw()
    provider = kit.OpenAIProvider(api_key=KEY, base_url=url, fast=not path.startswith("sdk"))
    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})
    start_cpu, start = time.process_time(), time.perf_counter()
    result = kit.run_df_sync(
        df, "prompt", provider=provider, model="bench", concurrency=c, progress=False, cache=False
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"wall": wall, "cpu": cpu, "ok": int((result["status"] == "ok").sum())}


async def hand_written(url: str, n: int, c: int) -> dict[str, float]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=url, api_key=KEY, max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    semaphore = asyncio.Semaphore(c)

    async def one(prompt: str) -> str | None:
        async with semaphore:
            reply = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": prompt}]
            )
            return reply.choices[0].message.content

    start_cpu, start = time.process_time(), time.perf_counter()
    answers = await asyncio.gather(*(one(f"question {i}") for i in range(n)))
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    await client.close()
    return {"wall": wall, "cpu": cpu, "ok": sum(a is not None for a in answers)}


async def bare(url: str, n: int, c: int) -> dict[str, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    semaphore = asyncio.Semaphore(c)
    async with aiohttp.ClientSession() as http:

        async def one(prompt: str) -> str:
            body = {"model": "bench", "messages": [{"role": "user", "content": prompt}]}
            async with (
                semaphore,
                http.post(url + "/chat/completions", json=body, headers=headers) as reply,
            ):
                answer: str = (await reply.json())["choices"][0]["message"]["content"]
                return answer

        start_cpu, start = time.process_time(), time.perf_counter()
        answers = await asyncio.gather(*(one(f"question {i}") for i in range(n)))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"wall": wall, "cpu": cpu, "ok": len(answers)}


def worker(args: argparse.Namespace) -> None:
    if args.worker == "hand-written":
        out = asyncio.run(hand_written(args.url, args.n, args.c))
    elif args.worker == "bare":
        out = asyncio.run(bare(args.url, args.n, args.c))
    else:
        out = kit_worker(args.url, args.n, args.c, args.worker)
    print(json.dumps(out))


def run(url: str, path: str, n: int, c: int) -> dict[str, Any]:
    call(url, "/_reset", {})
    command = [sys.executable, __file__, "--worker", path, "--url", url + "/v1"]
    command += ["--n", str(n), "--c", str(c)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["requests"] = call(url, "/_stats")["requests_total"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--c", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    paths = args.paths.split(",")
    if importlib.util.find_spec("orjson") is None:  # not a dependency: measured when installed
        paths = [path for path in paths if "orjson" not in path]
    runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    with serve("--latency", "0", "--seed", "1") as url:
        for _ in range(args.rounds):
            for path in paths:
                runs[path].append(run(url, path, args.n, args.c))
    print(f"N={args.n}, C={args.c}, zero latency, {args.rounds} interleaved rounds, medians")
    print(f"{'path':16} {'CPU/req':>9} {'vs sdk':>7} {'wall':>7} {'ok':>6}")
    base = None
    for path, results in runs.items():
        cpu = statistics.median(1e6 * r["cpu"] / r["requests"] for r in results)
        base = base or cpu
        wall = statistics.median(r["wall"] for r in results)
        ok = min(r["ok"] for r in results)
        print(f"{path:16} {cpu:7.0f}us {cpu / base:6.2f}x {wall:6.2f}s {ok:6d}")


if __name__ == "__main__":
    main()
