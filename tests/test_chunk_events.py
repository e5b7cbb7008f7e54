"""A streamed row's text reaches listeners (the panel's peek) a few times a second, not once
per chunk: an event per chunk cost the peek about 10 % of a fast stream's CPU."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.attempt import CHUNK_EVENT_S
from notebook_kit.events import ChunkReceived, Event


@pytest.mark.looptime
async def test_a_fast_stream_makes_a_few_events_a_second_that_add_up_to_its_text() -> None:
    words, rate = 400, 200.0  # two seconds of writing per reply
    demo = kit.DemoProvider(latency=0.5, jitter=0.0, stream_rate=rate, reply_words=words)
    df = pd.DataFrame({"prompt": [f"tell me about {i}" for i in range(3)]})
    job = kit.start(df, "prompt", provider=demo, stream=True, panel=False, cache=False)
    seen: list[ChunkReceived] = []

    def keep(event: Event) -> None:
        if isinstance(event, ChunkReceived):
            seen.append(event)

    job.subscribe(keep, (ChunkReceived,))
    result = await job
    for key in range(3):
        mine = [event for event in seen if event.key == key]
        seconds = (words - 1) / rate
        assert 2 <= len(mine) <= seconds / CHUNK_EVENT_S + 2  # not one per word (400)
        assert all(b.t - a.t >= CHUNK_EVENT_S - 1e-9 for a, b in itertools.pairwise(mine))
        text, reply = "".join(event.text for event in mine), str(result["response"][key])
        assert reply.startswith(text) and len(text) > 0.9 * len(reply)
