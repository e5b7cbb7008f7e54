"""``python -m fake_server [--port 0] [settings]``: print ``READY <url>``, serve until killed."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from . import FakeLLMServer
from .settings import RANDOM_FAULTS

DESCRIPTION = "Fake OpenAI- and Anthropic-compatible HTTP server for tests and benchmarks."


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text}")
    return value


def _parse_args(argv: Sequence[str] | None) -> tuple[int, dict[str, Any]]:
    """The port and the settings given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m fake_server", description=DESCRIPTION)
    parser.add_argument("--port", type=int, default=0)
    floats = ["latency", "latency_median", "latency_sigma", "retry_after", "rate_window"]
    floats += ["chunk_delay", "batch_seconds", "batch_cancel_seconds", "batch_expire_after"]
    for name in floats + [name for name, _ in RANDOM_FAULTS]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float)
    ints = ["seed", "rpm_limit", "tpm_limit", "batch_max_requests", "batch_max_bytes"]
    for name in [*ints, "batch_enqueued_token_limit"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--models", type=lambda names: names.split(","), help="comma-separated")
    parser.add_argument(
        "--model-latency",
        type=_json_object,
        metavar="JSON",
        help='per-model latency, e.g. \'{"draft": {"median": 0.9, "sigma": 0.5}, '
        '"fast": {"latency": 0.1}}\'',
    )
    parser.add_argument("--quota-exhausted", action="store_true", default=None)
    parser.add_argument("--no-usage", dest="usage", action="store_false", default=None)
    parser.add_argument(
        "--no-rate-headers", dest="rate_headers", action="store_false", default=None
    )
    parser.add_argument("--stream-options-refused", action="store_true", default=None)
    parser.add_argument(
        "--no-stream-usage", dest="stream_usage", action="store_false", default=None
    )
    parser.add_argument("--no-batches", dest="batches", action="store_false", default=None)
    args = vars(parser.parse_args(argv))
    port = args.pop("port")
    return port, {name: value for name, value in args.items() if value is not None}


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, after printing ``READY <url>``."""
    port, settings = _parse_args(argv)

    def exit_on_term(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, exit_on_term)
    with FakeLLMServer(port=port, **settings) as server:
        print(f"READY {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
