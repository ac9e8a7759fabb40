"""The SSE tap: usage taken out of the stream, the client's events exactly as it asked for them."""

from __future__ import annotations

import json

from llmnest.gateway.stream import StreamTap, upstream_body


def ev(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


CHUNK = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
STREAM = (ev({**CHUNK, "usage": {**USAGE, "completion_tokens": 1}}) + ev({**CHUNK, "usage": USAGE})
          + ev({"id": "c1", "choices": [], "usage": USAGE}) + b"data: [DONE]\n\n")


def run(tap: StreamTap, data: bytes, piece: int = 7) -> bytes:
    out = b"".join(b"".join(tap.feed(data[i:i + piece])) for i in range(0, len(data), piece))
    return out + b"".join(tap.flush())


def test_upstream_body_always_asks_for_usage() -> None:
    sent, wants, cont = upstream_body({"model": "m", "stream": True})
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True} and not wants and not cont
    _, wants, cont = upstream_body({"stream_options": {"include_usage": True}})
    assert wants and not cont


def test_client_that_did_not_ask_sees_no_usage_at_all() -> None:
    tap = StreamTap(False, False)
    out = run(tap, STREAM)
    assert out == ev(CHUNK) + ev(CHUNK) + b"data: [DONE]\n\n"
    assert (tap.prompt_tokens, tap.completion_tokens, tap.done) == (5, 2, True)


def test_client_that_asked_for_usage_gets_the_final_usage_chunk_only() -> None:
    out = run(StreamTap(True, False), STREAM)
    assert out == ev(CHUNK) + ev(CHUNK) + ev({"id": "c1", "choices": [], "usage": USAGE}) + b"data: [DONE]\n\n"


def test_client_that_asked_for_per_chunk_usage_gets_the_stream_unchanged() -> None:
    assert run(StreamTap(True, True), STREAM, piece=3) == STREAM


def test_usage_not_last_takes_the_general_path() -> None:
    odd = ev({"usage": USAGE, **CHUNK}) + b"data: [DONE]\n\n"
    tap = StreamTap(False, False)
    assert run(tap, odd) == ev(CHUNK) + b"data: [DONE]\n\n" and tap.completion_tokens == 2


def test_without_engine_usage_chunks_are_counted_and_a_partial_tail_is_flushed() -> None:
    tap = StreamTap(False, False)
    assert run(tap, ev(CHUNK) + ev(CHUNK) + b"data: {\"partial\"") == ev(CHUNK) + ev(CHUNK) + b'data: {\"partial\"\n\n'
    assert tap.usage is None and tap.completion_tokens == 3 and tap.first_token_at is not None and not tap.done
