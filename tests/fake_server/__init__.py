"""Fake OpenAI- and Anthropic-compatible HTTP server for tests and benchmarks.

It injects faults (at random, or per prompt through directives), enforces rate
limits and counts what really happened on the wire.

In-process::

    with FakeLLMServer(latency=0.2, rate_500=0.1, seed=1) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k")
        ...
        server.stats()["peak_in_flight"]

As a subprocess, ``python -m fake_server --port 0 --latency 0.2`` (with ``tests/``
on ``sys.path``: ``cwd=tests`` or ``PYTHONPATH=tests``) prints
``READY http://127.0.0.1:PORT`` once listening and serves until killed.
Other processes use ``GET /_stats``, ``POST /_reset`` and ``GET``/``POST /_config``.

Endpoints: ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages``
(Anthropic). The order of checks per request: API key (401), model (404),
quota, rate limits (429), then one fault: a directive's, else a random one.
4xx answers are immediate; successes, 5xx, malformed bodies and resets come
after the latency; hangs never answer. A request is in flight from arrival
until its response is written or its connection is gone.

Latency: fixed (``latency``) or lognormal (``latency_median``, ``latency_sigma``;
drawn from the server's one seeded generator). ``model_latency`` gives some models
their own, by the request's ``model``: ``{"draft": {"median": 0.9, "sigma": 0.5},
"fast": {"latency": 0.1}}`` (``--model-latency JSON`` on the command line); other
models use the global settings, and a ``[[latency=...]]`` directive beats both.
``stats()["latencies"]`` records each latency drawn, in the order drawn.

Per model, by the body's ``model`` field (a body that is not a JSON object counts in
no model's): ``stats()["requests_by_model"]`` (requests received, rejected ones too),
``["in_flight_by_model"]`` (in flight now; models with none are left out) and
``["peak_in_flight_by_model"]`` (the most of that model in flight at once), with the
same in-flight span as ``in_flight`` and ``peak_in_flight`` (which count every model).
A reset starts each peak again from what is in flight then.

Directives: ``[[...]]`` blocks in the last user message override random faults
for that prompt, e.g. ``[[status=500 times=2]]`` (fail the first two attempts
of this prompt), ``[[429 retry_after=1.5]]``, ``[[quota]]``, ``[[reset]]``,
``[[hang times=1]]``, ``[[malformed]]``, ``[[content_filter]]``,
``[[latency=0.5]]``, ``[[finish=length]]``, ``[[finish=content_filter]]``,
``[[tokens=500]]``. An unknown directive gets a 400.

Hostile replies: ``[[not_utf8]]`` (a 200 whose body is not UTF-8), ``[[error_200]]``
(a 200 carrying the API's error body), ``[[429 retry_after_header=nan
retry_after_ms_header=-5000]]`` (Retry-After headers sent verbatim, only those given);
settings ``reply_patch`` (a JSON merge patch, RFC 7396, applied to every success body:
``{"usage": {"input_tokens": "12"}}``; null removes a key) and ``error_body`` (sent
instead of the API's body on every error answer). ``stats()["systems_seen"]`` holds the
system prompt of each request in arrival order ("" when none).

Modules: ``server`` (lifecycle, routes, control endpoints), ``core`` (the
per-request pipeline: directives, limits, faults, latency, in-flight
accounting), ``settings``, ``state`` (rate-limit windows, stats), ``api`` (the
seam each API module implements) and one module per API: ``openai_chat``,
``anthropic_messages``. A new API is an ``api.Api`` subclass in its own module,
listed in ``server.APIS``.
"""

from .server import FakeLLMServer
from .settings import Settings

__all__ = ["FakeLLMServer", "Settings"]
