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


def test_a_block_of_whole_events_is_passed_on_as_event_by_event() -> None:
    """A relay that fell behind reads many events at once; the block path must give what feeding the
    same bytes event by event gives, for every kind of client and for chunks it cannot take."""
    def chunks(n: int, **usage_extra) -> bytes:
        return b"".join(ev({**CHUNK, "usage": {**USAGE, "completion_tokens": i, **usage_extra}}) for i in range(1, n + 1))

    plain = ev(CHUNK) * 5
    nested = {"prompt_tokens_details": {"cached_tokens": 3}}
    for mid, stripped in ((chunks(5), plain), (chunks(5, **nested), plain), (plain, plain),
                          (b": ping\n\n" + chunks(2), b": ping\n\n" + ev(CHUNK) * 2)):
        for wants in ((False, False), (True, False), (True, True)):
            whole, split = StreamTap(*wants), StreamTap(*wants)
            got = b"".join(whole.feed(mid)) + b"".join(whole.feed(STREAM))
            events = [e + b"\n\n" for e in (mid + STREAM).split(b"\n\n") if e]
            assert got == b"".join(b"".join(split.feed(e)) for e in events)
            assert got.startswith(mid if wants[1] else stripped)
            assert (whole.prompt_tokens, whole.completion_tokens, whole.done, whole.content_chunks) == \
                   (split.prompt_tokens, split.completion_tokens, True, split.content_chunks)


def test_a_block_ending_mid_event_keeps_the_rest_for_the_next_read() -> None:
    tap = StreamTap(False, False)
    one = ev({**CHUNK, "usage": USAGE})
    assert tap.feed(one * 2 + one[:10]) == [ev(CHUNK) * 2]
    assert tap.feed(one[10:]) == [ev(CHUNK)] and tap.content_chunks == 3 and tap.first_token_at is not None
