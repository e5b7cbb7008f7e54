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

A hostile wire: the setting ``stream_script`` (a list of str, default None) makes every
streamed success exactly those pieces, each written at once as one content chunk (so
``chunk_delay`` comes between two pieces and ``cut_after``, ``stream_error_after`` and
``stall_after`` count pieces), with no opening or closing events: a test writes any bytes
it likes (CRLF, a record split between two pieces, comments, a huge record) and ends the
body, cuts it or stalls it. Pieces are UTF-8, except that the code points U+DC80 to
U+DCFF stand for the raw bytes 0x80 to 0xFF (``"\udcff"``: a byte that is no UTF-8).
``malformed`` and ``not_utf8`` leave a script as it is.

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

Batches: OpenAI's Files and Batch APIs (``POST``/``GET /v1/files``, ``GET``/``DELETE
/v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST``/``GET /v1/batches``, ``GET
/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``; endpoint ``/v1/chat/completions``
only) and Anthropic's Message Batches (``POST``/``GET /v1/messages/batches``, ``GET``/``DELETE
.../{id}``, ``POST .../{id}/cancel``, ``GET .../{id}/results``, the absolute ``results_url``).
The key is checked as for chat (401); setting ``batches`` False answers 404 to all of these
routes. A batch's requests are answered when it is created, by the chat pipeline without
latency, rate limits, quota or random faults: directives apply (``[[status=500]]``,
``[[content_filter]]``, ``[[finish=length]]``, ``[[tokens=9]]``; ``times=`` counts with the
online attempts), ``reset``/``hang``/``malformed``/``not_utf8``/``error_200`` succeed, and
``models``, ``usage``, ``reply_patch``, ``error_body`` apply. The answers come out in a
seeded shuffle (the result files' order), evenly over ``batch_seconds`` (default 0.5), read
off the monotonic clock at each call. OpenAI: ``validating`` for the first tenth (request
counts all 0), ``in_progress`` to nine tenths, ``finalizing``, then ``completed``; Anthropic:
``in_progress`` then ``ended``, counts growing. A cancel: ``cancelling``/``canceling`` for
``batch_cancel_seconds`` (0.1), then ``cancelled``/``ended``, keeping what finished before the
cancel; cancelling an ended OpenAI batch is a 409 (a cancelled one is returned as is), an
ended Anthropic one is returned as is. ``batch_expire_after`` (seconds, default None: 24 h,
as ``expires_at`` says): an unfinished batch then expires.

Results. OpenAI output file: ``{"id": "batch_req_N", "custom_id", "response":
{"status_code": 200, "request_id": "req_N", "body": <chat.completion>}, "error": null}``;
error file: the same with the error's status and body, then each request a cancel or
expiry left unrun: ``"response": null, "error": {"code": "batch_cancelled" |
"batch_expired", "message"}`` (counted as failed); a file with no lines has a null id.
Anthropic lines: ``{"custom_id", "result": R}``, R ``{"type": "succeeded", "message"}``,
``{"type": "errored", "error": {"type": "error", "error": {"type", "message"}}}``,
``{"type": "canceled"}`` or ``{"type": "expired"}``.

Batch limits. OpenAI: an upload for purpose batch over ``batch_max_bytes`` (default None:
200 MB) gets 400 ``File is too large.``; a batch fails (``failed``, ``errors.data`` items
with ``code``, ``line``, ``message``, ``param``) on an empty file (``empty_file``), more
lines than ``batch_max_requests`` (None: 50000; ``too_many_tasks``), a line not JSON
(``invalid_json_line``), without custom_id or body, or not a POST (``invalid_request``), a
repeated custom_id (``duplicate_custom_id``), a url not the endpoint (``url_mismatch``), a
model not in ``models`` (``model_not_found``) or other than the first line's
(``model_mismatch``: one model per batch); with ``batch_enqueued_token_limit`` set, when
its input tokens (estimated as for chat) and those of the key's unfinished batches of that
model exceed it (``token_limit_exceeded``). Anthropic, at create: 413 ``request_too_large``
over ``batch_max_bytes`` (None: 256 MB of body); 400 over ``batch_max_requests`` (None:
100000), on a repeated custom_id or one not matching ``^[a-zA-Z0-9_-]{1,64}$``.

Batch stats: ``batches_created``, ``batches_by_api`` (``{"openai": n, "anthropic": m}``),
``batch_ids`` and ``batch_sizes`` (requests in each, creation order), ``batch_requests``,
``files_uploaded``, ``batch_retrieves`` (Anthropic's ``results()`` retrieves first),
``batch_cancels``, ``batch_lists``, ``result_downloads``. Batches are kept until the server
stops (a reset clears only the stats). On the command line: ``--batch-seconds``,
``--batch-cancel-seconds``, ``--batch-expire-after``, ``--batch-max-requests``,
``--batch-max-bytes``, ``--batch-enqueued-token-limit``, ``--no-batches``.

Modules: ``server`` (lifecycle, routes, control endpoints), ``core`` (the
per-request pipeline: directives, limits, faults, latency, in-flight
accounting), ``settings``, ``state`` (rate-limit windows, stats), ``api`` (the
seam each API module implements) and one module per API: ``openai_chat``,
``anthropic_messages``. A new API is an ``api.Api`` subclass in its own module,
listed in ``server.APIS``. Batches: ``batches`` (the store, each job's clock, the
routes' guard), ``openai_files`` and ``openai_batches``, ``anthropic_batches``.
"""

from .server import FakeLLMServer
from .settings import Settings

__all__ = ["FakeLLMServer", "Settings"]
