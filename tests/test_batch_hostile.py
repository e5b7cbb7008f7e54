"""What batch services may send back, read without losing a row: odd lines in result files,
odd fields in batch objects, keys in error texts."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import anthropic
import openai
import pytest

from notebook_kit.batch.anthropic_batches import AnthropicBatches
from notebook_kit.batch.openai_batches import OpenAIBatches
from notebook_kit.errors import CallError
from notebook_kit.secrets import Redactor
from notebook_kit.types import Completion, ErrorType, Request

KEY = "sk-batch-SENTINEL-0123456789"
STAND_IN = Request(key=-1, messages=[], model="gpt-4.1-mini")


def openai_batches() -> OpenAIBatches:
    return OpenAIBatches(None, openai, Redactor(KEY), None)


def anthropic_batches() -> AnthropicBatches:
    return AnthropicBatches(None, anthropic, Redactor(KEY), None)


def line(record: object) -> bytes:
    return json.dumps(record).encode()


def reply(status: object, body: object) -> bytes:
    return line({"custom_id": "a", "response": {"status_code": status, "body": body}})


def gone(error: object) -> bytes:
    return line({"custom_id": "a", "response": None, "error": error})


def errored(kind: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind}}}


CHAT = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "model": "m"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", None),
        (b"\xff\xfe", None),
        (line([1, 2]), None),
        (line({"custom_id": 7, "response": {"status_code": 200, "body": CHAT}}), None),
        (reply(200, CHAT), "ok"),
        (
            line({"custom_id": "a", "response": {"status_code": "200", "body": CHAT}}),
            "invalid_response",
        ),
        (
            line({"custom_id": "a", "response": {"status_code": True, "body": CHAT}}),
            "invalid_response",
        ),
        (
            line({"custom_id": "a", "response": {"status_code": 200, "body": "text"}}),
            "invalid_response",
        ),
        (
            line({"custom_id": "a", "response": {"status_code": 200, "body": {"choices": "x"}}}),
            "invalid_response",
        ),
        (
            line(
                {
                    "custom_id": "a",
                    "response": {"status_code": 200, "body": {"error": {"message": "x"}}},
                }
            ),
            "invalid_response",
        ),
        (
            line({"custom_id": "a", "response": {"status_code": 429, "body": {"error": {}}}}),
            "rate_limit",
        ),
        (reply(400, None), "bad_request"),
        (gone({"code": "batch_expired"}), "expired"),
        (
            gone({"code": "batch_cancelled"}),
            "cancelled",
        ),
        (gone({"code": 5, "message": []}), "server"),
        (line({"custom_id": "a"}), "invalid_response"),
    ],
)
def test_openai_result_lines(raw: bytes, expected: str | None) -> None:
    read = openai_batches()._read(raw, STAND_IN)
    if expected is None:
        assert read is None
        return
    assert read is not None and read[0] == "a"
    outcome = read[1]
    kind = "ok" if isinstance(outcome, Completion) else outcome.error_type.value
    assert kind == expected


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"type": "succeeded", "message": {"content": [{"type": "text", "text": "hi"}]}}, "ok"),
        ({"type": "succeeded", "message": {"content": 5}}, "invalid_response"),
        ({"type": "succeeded", "message": "hi"}, "invalid_response"),
        (
            {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error"}}},
            "server",
        ),
        (
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error"}},
            },
            "bad_request",
        ),
        ({"type": "errored", "error": "boom"}, "server"),
        ({"type": "expired"}, "expired"),
        ({"type": "canceled"}, "cancelled"),
        ({"type": ["odd"]}, "invalid_response"),
        ("succeeded", "invalid_response"),
    ],
)
def test_anthropic_result_lines(result: Any, expected: str) -> None:
    read = anthropic_batches()._read(line({"custom_id": "a", "result": result}), STAND_IN)
    assert read is not None
    outcome = read[1]
    kind = "ok" if isinstance(outcome, Completion) else outcome.error_type.value
    assert kind == expected


def test_keys_in_error_texts_are_masked() -> None:
    body = {"error": {"message": f"key {KEY} was refused", "code": "invalid_api_key"}}
    raw = line({"custom_id": "a", "response": {"status_code": 401, "body": body}})
    read = openai_batches()._read(raw, STAND_IN)
    assert read is not None and isinstance(read[1], CallError)
    assert KEY not in str(read[1]) and read[1].error_type is ErrorType.AUTH
    raw = line({"custom_id": "a", "error": {"code": "x", "message": f"no {KEY}"}})
    read = openai_batches()._read(raw, STAND_IN)
    assert read is not None and KEY not in str(read[1])
    failed = SimpleNamespace(
        id="b",
        status="failed",
        errors=SimpleNamespace(data=[SimpleNamespace(code="x", message=KEY)]),
    )
    assert KEY not in str(openai_batches()._status(failed).error)


@pytest.mark.parametrize(
    "counts",
    [
        None,
        SimpleNamespace(total="3", completed=-1, failed=float("nan")),
        SimpleNamespace(total=[]),
    ],
)
def test_odd_batch_objects_give_a_state(counts: object) -> None:
    odd = SimpleNamespace(
        id="b", status="paused", request_counts=counts, expires_at="tomorrow", errors=None
    )
    status = openai_batches()._status(odd, total=3)
    assert status.state == "running" and status.total == 3 and status.done == 0
    assert status.expires_at is None and not status.ended
    ended = SimpleNamespace(
        id="b", processing_status="ended", request_counts=counts, cancel_initiated_at=None
    )
    assert anthropic_batches()._status(ended, total=3).state == "done"


def test_a_batch_object_without_an_id_is_an_invalid_response() -> None:
    with pytest.raises(CallError) as caught:
        openai_batches()._status("<html>maintenance</html>")
    assert caught.value.error_type is ErrorType.INVALID_RESPONSE
    with pytest.raises(CallError):
        anthropic_batches()._status(SimpleNamespace(id=None, processing_status="ended"))


def test_anthropic_parts_leave_room_for_the_requests_envelope() -> None:
    from notebook_kit.batch.service import BatchLimit, split

    assert split([10, 10, 10], BatchLimit(requests=100, bytes=30)) == [range(3)]
    assert split([10, 10, 10], BatchLimit(requests=100, bytes=30, envelope=16)) == [
        range(1),
        range(1, 2),
        range(2, 3),
    ]
