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
until its response (for a stream: its last event) is written or its connection
is gone.

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

Streaming: a body with ``"stream": true`` gets a 200 ``text/event-stream`` as the real
APIs write it, once every check above has passed (auth, model, quota, rate limits, 4xx
and 5xx faults, settings that refuse a request: those stay ordinary JSON answers). The
reply is split in pieces, one per word with the whitespace before it kept (joined they
are exactly the non-streamed text, JSON for a structured reply); each piece is one
*content chunk*. OpenAI: ``data: {chat.completion.chunk}`` records, the first with
``delta: {"role": "assistant", "content": ""}``, one ``{"content": piece}`` delta per
content chunk (a refusal: ``"content": null, "refusal": ""`` first, then ``refusal``
pieces), one with ``delta: {}`` and the ``finish_reason``, then ``data: [DONE]``. With
``stream_options: {"include_usage": true}`` a chunk with ``"choices": []`` and the usage
(prompt, completion and total tokens) comes before ``[DONE]``, and every other chunk
carries ``"usage": null``; without it no chunk has a ``usage`` key. Anthropic:
``event: <type>`` / ``data: <json>`` records: ``message_start`` (usage: the input tokens
and ``output_tokens`` 1), ``content_block_start``, ``ping``, one ``content_block_delta``
per content chunk (``text_delta``; a forced tool's call: a ``tool_use`` block and
``input_json_delta`` pieces of its JSON), ``content_block_stop``, ``message_delta`` (stop
reason, ``stop_sequence`` null, ``usage: {"output_tokens": n}``), ``message_stop``.

Pacing: ``latency`` (and its directive, per-model table and lognormal draw) is the time to
the first write, which holds the opening events and the first content chunk; setting
``chunk_delay`` (seconds, default 0; directive ``[[chunk_delay=0.2]]`` beats it) is slept
before each further content chunk; the closing events follow the last content chunk at
once. A stream is in flight until its last event is written or its client is gone.

Streams that go wrong, by directive, after N content chunks (counted from the first; N
beyond the reply's pieces: after all of them, before the closing events), for the first
``times`` attempts of the prompt when ``times=`` is given: ``[[cut_after=3]]`` aborts the
connection (``transport.abort()``: no closing events, no end of the chunked body; the
SDKs raise a read error); ``[[stream_error_after=2]]`` sends an error event and ends the
body properly: OpenAI ``data: {"error": {"message": "The server had an error while
processing your request. Sorry about that!", "type": "server_error", "param": null,
"code": null}}``, Anthropic ``event: error`` / ``data: {"type": "error", "error":
{"type": "overloaded_error", "message": "Overloaded"}}``; ``[[stall_after=2]]`` sends
nothing more and keeps the connection open until the client goes away. With several, the
smallest N wins (on a tie: cut, error, stall). Non-streamed requests ignore these and
``chunk_delay``. Faults that spoil a 200 spoil a stream: ``malformed`` cuts the JSON of
its first event in half (the record still ends), ``not_utf8`` puts a non-UTF-8 byte in
it, ``error_200`` makes the stream that one error event alone (not billed, as before).

Stream settings: ``stream_options_refused`` (default False: a 400 ``Unrecognized request
argument supplied: stream_options``, ``param`` ``"stream_options"``, to every OpenAI
request that has ``stream_options``, streamed or not, after the rate limits);
``stream_usage`` (default True; False, or ``usage`` False, makes a server that does not
report usage in streams: OpenAI never sends the usage chunk nor ``"usage": null``
whatever ``include_usage`` says; Anthropic reports ``input_tokens`` 0 and
``output_tokens`` 0 in ``message_start`` but keeps the true ``output_tokens`` in
``message_delta``, which the SDK requires). On the command line: ``--chunk-delay``,
``--stream-options-refused``, ``--no-stream-usage``. ``reply_patch`` and ``error_body``
apply to non-streamed bodies and pre-stream errors only, not to stream events.

Stream stats: ``streams_started`` (200 streams begun), ``streams_completed`` (every event
written), ``streams_cut`` (cut, ended by an error event, stalled and then left, or the
client gone mid-stream; so started = completed + cut once none is open),
``chunks_sent`` (content chunks written, over all streams) and ``stream_spans`` (per ended
stream that sent content, in the order they end: [seconds from arrival to the first
content chunk, seconds from it to the last content chunk]). A stream's tokens are billed
in full when it starts (``tokens_billed_*``), however it ends; its 200 counts in
``responses`` when it starts, and a client that leaves mid-stream in ``disconnects`` too.

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
