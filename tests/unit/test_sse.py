"""The shared SSE framing (llmnest.sse): reads cut anywhere give the same events, CRLF/CR/LF read the
same, comments and multi-line data, [DONE], and an event that never ends is refused."""

from __future__ import annotations

import random

import pytest

from llmnest import sse

STREAM = (b": ping\n\n"
          b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
          b"event: message\nid: 7\ndata: {\"x\":\ndata:  1}\n\n"
          b"retry: 100\n\n"
          b'data:{"y":2}\n\n'
          b"data: [DONE]\n\n")
EVENTS = [b": ping", b'data: {"choices":[{"delta":{"content":"a"}}]}', b'event: message\nid: 7\ndata: {"x":\ndata:  1}',
          b"retry: 100", b'data:{"y":2}', b"data: [DONE]"]


def split_all(reads: list[bytes], splitter: sse.Splitter | None = None) -> list[bytes]:
    splitter = splitter or sse.Splitter()
    out: list[bytes] = []
    for piece in reads:
        block = splitter.feed(piece)
        if block:
            assert block.endswith(b"\n\n")
            out += sse.events(block)
    return out


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


def test_one_read_and_every_single_cut_give_the_same_events() -> None:
    assert split_all([STREAM]) == EVENTS
    for at in range(1, len(STREAM)):
        assert split_all(cut(STREAM, [at])) == EVENTS, at


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends_read_as_lf_wherever_the_reads_are_cut(ending: bytes) -> None:
    other = STREAM.replace(b"\n", ending)
    rng = random.Random(7)
    for _ in range(300):  # (every CRLF split across two reads among them)
        points = rng.sample(range(1, len(other)), rng.randint(1, 12))
        assert split_all(cut(other, points)) == EVENTS
    assert split_all([bytes([b]) for b in other]) == EVENTS


def test_data_joins_multi_line_data_and_comments_have_none() -> None:
    datas = [sse.data(e) for e in EVENTS]
    assert datas == [None, b'{"choices":[{"delta":{"content":"a"}}]}', b'{"x":\n 1}', None, b'{"y":2}', b"[DONE]"]
    assert sse.data(b"data") is None and sse.data(b"data:") == b""


def test_an_unfinished_event_is_kept_and_the_rest_is_given_at_the_end() -> None:
    splitter = sse.Splitter()
    assert splitter.feed(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert splitter.feed(b"\r") == b"" and splitter.feed(b"\n") == b""  # (one line end, split across reads)
    assert splitter.rest() == b"data: 2" and splitter.buf == b""


def test_an_event_over_the_limit_is_refused() -> None:
    splitter = sse.Splitter(max_event=100)
    splitter.feed(b"data: " + b"x" * 90)
    with pytest.raises(sse.EventTooLarge):
        splitter.feed(b"x" * 20)
    assert split_all([b"data: " + b"x" * 90 + b"\n\n"] * 3, sse.Splitter(max_event=100)) == [b"data: " + b"x" * 90] * 3


def test_the_done_marker_is_the_one_both_callers_look_for() -> None:
    assert sse.DONE + b"\n\n" == STREAM[-14:]


CHAT = b"".join(b"data: %s\n\n" % e for e in [
    b'{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}',
    b'{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    b"[DONE]"])


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_the_gateway_and_the_bench_read_a_stream_cut_anywhere_alike(ending: bytes) -> None:
    from llmnest.bench.record import RequestRecord
    from llmnest.bench.stream import EventReader
    from llmnest.gateway.stream import StreamTap

    stream = CHAT.replace(b"\n", ending)
    for at in range(1, len(stream), 7):
        tap, record = StreamTap(True, False), RequestRecord(0, 0.0, 3, 2)
        reader = EventReader(record, True, 0.0)
        passed = b""
        for piece in (stream[:at], stream[at:]):
            passed += b"".join(tap.feed(piece))
            reader.feed(piece, 1.0)
        assert tap.done and (tap.prompt_tokens, tap.completion_tokens) == (3, 2) and passed == CHAT
        assert reader.done and (record.prompt_tokens, record.output_tokens, len(record.chunks)) == (3, 2, 2)


def test_the_bench_reads_an_event_whose_json_spans_several_data_lines() -> None:
    from llmnest.bench.record import RequestRecord
    from llmnest.bench.stream import EventReader

    record = RequestRecord(0, 0.0, 3, 2)
    reader = EventReader(record, True, 0.0)
    reader.feed(b'data: {"choices":[{"delta":{"content":"Hi"}}],\ndata: "usage":{"completion_tokens":1}}\n\n', 1.0)
    assert record.chunks == [1.0] and record.output_tokens == 1


def test_an_endless_event_fails_the_bench_request_and_the_gateway_relay() -> None:
    from llmnest.bench.record import RequestRecord
    from llmnest.bench.stream import EventReader
    from llmnest.gateway.stream import StreamTap

    endless = b"data: " + b"x" * sse.MAX_EVENT + b"x"
    with pytest.raises(sse.EventTooLarge):
        EventReader(RequestRecord(0, 0.0, 1, 1), True, 0.0).feed(endless, 1.0)
    with pytest.raises(sse.EventTooLarge):
        StreamTap(False, False).feed(endless)


def test_the_first_line_end_sets_the_style_so_an_lf_stream_is_never_rewritten() -> None:
    assert split_all([b"data: a\n", b"data: b\rc\n\n"]) == [b"data: a\ndata: b\rc"]  # (a CR in an LF stream is data)
    assert split_all([b"data: a", b"\r\n\r\ndata: b\n\n"]) == [b"data: a", b"data: b"]
