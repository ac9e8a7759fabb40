"""The streamed-response reader on raw HTTP bytes (framed by the shared HTTP/1.1 connection): which
events count as content, usage, errors, and that every way of cutting the bytes into reads (chunk
boundaries anywhere) gives the same record."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from llmnest import http1
from llmnest.bench.record import RequestRecord
from llmnest.bench.request import Client
from llmnest.bench.stream import EventReader

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def event(obj: dict | str, compact: bool = True) -> bytes:
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":") if compact else None)
    return b"data: " + text.encode() + b"\n\n"


def chat(delta: dict, finish: str | None = None, compact: bool = True) -> bytes:
    return event({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                  "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}, compact)


def usage(prompt: int, completion: int, compact: bool = True) -> bytes:
    return event({"id": "c1", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                       "total_tokens": prompt + completion}}, compact)


def vllm_chat(compact: bool = True) -> list[bytes]:
    """What vLLM streams for a chat request: a role-only chunk, content chunks, usage, [DONE]."""
    return [chat({"role": "assistant", "content": ""}, compact=compact), chat({"content": "Hel"}, compact=compact),
            chat({"content": "lo"}, compact=compact), chat({"content": "!"}, "stop", compact), usage(12, 3, compact),
            event("[DONE]")]


def chunked(events: list[bytes]) -> bytes:
    """One HTTP chunk per event, as uvicorn sends them, then the last chunk."""
    return HEAD + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


class Socket:
    """Stands in for the socket under the connection, so that each test decides exactly how the bytes
    are cut into reads (a real socket may join them)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass


@dataclass
class Read:
    events: EventReader
    finished: bool
    status: int
    keep_alive: bool
    error_body: bytes
    error: BaseException | None


def read(reads: list[bytes], chat_endpoint: bool = True, closed: bool = False) -> tuple[Read, RequestRecord]:
    """Feed the reads one by one to a connection with the bench's reader as its sink, the i-th arriving
    at time i + 1 (the request was sent at 0); `closed`: the server closes the connection after them."""
    record = RequestRecord(0, 0.0, 5, 16)
    events = EventReader(record, chat_endpoint, 0.0)

    async def go() -> Read:
        conn = http1.Connection()
        conn.connection_made(Socket())  # type: ignore[arg-type]
        clock = [0.0]
        conn.send(b"POST / HTTP/1.1\r\n\r\n", lambda data, arrived: events.feed(data, clock[0]))
        for i, data in enumerate(reads):
            clock[0] = float(i + 1)
            conn.data_received(data)
        if closed:
            conn.connection_lost(None)
        return Read(events, conn.complete, conn.status, conn.keep_alive, conn.take(), conn.error)

    return asyncio.run(go()), record


def per_event_reads(events: list[bytes]) -> list[bytes]:
    """Each event's chunk in its own read (the head with the first)."""
    whole = chunked(events)
    cuts = [len(HEAD)]
    for e in events:
        cuts.append(cuts[-1] + len(b"%x\r\n" % len(e)) + len(e) + 2)
    cuts[0] = 0
    return [whole[a:b] for a, b in zip(cuts, [*cuts[1:-1], len(whole)])]


@pytest.mark.parametrize("compact", [True, False], ids=["vllm-compact", "spaced-json"])
def test_role_chunk_is_not_content_and_usage_gives_the_token_counts(compact: bool) -> None:
    response, record = read(per_event_reads(vllm_chat(compact)))
    assert response.finished and response.status == 200 and response.keep_alive
    assert record.chunks == [2.0, 3.0, 4.0]  # the role chunk (read 1) is not content
    assert (record.output_tokens, record.prompt_tokens) == (3, 12)
    assert response.events.done and response.events.text() == ""  # usage came: no text kept


@pytest.mark.parametrize("compact", [True, False], ids=["vllm-compact", "spaced-json"])
def test_every_split_of_the_bytes_gives_the_same_record(compact: bool) -> None:
    whole = chunked(vllm_chat(compact))
    _, one = read([whole])
    assert one.chunks == [1.0, 1.0, 1.0] and one.output_tokens == 3
    for cut in range(1, len(whole)):
        for second in (cut + 1, cut + 7, cut + 61):
            pieces = [whole[:cut], whole[cut:second], whole[second:]]
            response, record = read([p for p in pieces if p])
            assert response.finished, (cut, second)
            assert len(record.chunks) == 3 and record.output_tokens == 3 and record.prompt_tokens == 12, (cut, second)
            assert record.chunks == sorted(record.chunks)


def test_a_content_chunk_is_timed_when_its_last_byte_arrives() -> None:
    whole = chunked(vllm_chat())
    split = whole.index(b'"lo"') + 2  # the second content event is cut in two reads
    _, record = read([whole[:split], whole[split:]])
    assert record.chunks == [1.0, 2.0, 2.0]


def test_several_events_per_http_chunk_and_one_event_over_several_chunks() -> None:
    events = b"".join(vllm_chat())
    pieces = [events[i:i + 50] for i in range(0, len(events), 50)]
    body = HEAD + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    for step in (1, 13, len(body)):
        response, record = read([body[i:i + step] for i in range(0, len(body), step)])
        assert response.finished and len(record.chunks) == 3 and record.output_tokens == 3


def test_chunk_extensions_trailers_and_crlf_events() -> None:
    events = [e.replace(b"\n", b"\r\n") for e in [b": ping\n\n", *vllm_chat()]]
    body = HEAD + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\nX-Trailer: 1\r\n\r\n"
    for step in (1, 5, len(body)):
        response, record = read([body[i:i + step] for i in range(0, len(body), step)])
        assert response.finished and response.keep_alive
        assert len(record.chunks) == 3 and record.output_tokens == 3


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_content_counts_as_generated(key: str) -> None:
    stream = [chat({"role": "assistant", "content": ""}), chat({key: "hmm", "content": None}),
              chat({key: "so", "content": ""}), chat({"content": "ok"}), event("[DONE]")]
    for reads in (per_event_reads(stream), [chunked(stream)]):
        response, record = read(reads)
        assert len(record.chunks) == 3 and record.output_tokens is None
        assert response.events.text() == "hmmsook"  # no usage: the text is there to count tokens


def test_completions_text() -> None:
    stream = [event({"choices": [{"index": 0, "text": " Paris", "finish_reason": None}]}),
              event({"choices": [{"index": 0, "text": "", "finish_reason": None}]}),
              event({"choices": [{"index": 0, "text": ".", "finish_reason": "stop"}]}),
              event({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}), event("[DONE]")]
    for reads in (per_event_reads(stream), [chunked(stream)]):
        _, record = read(reads, chat_endpoint=False)
        assert len(record.chunks) == 2 and record.output_tokens == 2


def test_error_event_ends_the_request_as_a_stream_error() -> None:
    stream = [chat({"content": "a"}), event({"error": {"message": "engine died", "code": 500}}),
              chat({"content": "never read"})]
    for reads in (per_event_reads(stream), [chunked(stream)]):
        _, record = read(reads)
        assert record.error == "stream error" and record.detail == "engine died"
        assert len(record.chunks) == 1


def test_a_response_without_text_is_timed_at_its_finish_event() -> None:
    """One token that decodes to nothing (or EOS first): vLLM counts it, with TTFT at the finish chunk."""
    stream = [chat({"role": "assistant", "content": ""}), chat({"content": ""}, "length"), usage(3, 1),
              event("[DONE]")]
    _, record = read(per_event_reads(stream))
    assert record.chunks == [2.0] and record.output_tokens == 1
    _, record = read(per_event_reads([chat({"content": "a"}), chat({"content": ""}, "stop"), event("[DONE]")]))
    assert len(record.chunks) == 1  # a finish after text adds no chunk


def test_text_that_looks_like_json_keys_is_just_text() -> None:
    tricky = ['"content":"', '"usage":{"completion_tokens":99}', "data: [DONE]", '": ', "\\", ""]
    stream = [chat({"content": t}) for t in tricky] + [usage(1, 5), event("[DONE]")]
    _, record = read([chunked(stream)])
    assert len(record.chunks) == 5 and record.output_tokens == 5


def test_a_sized_body_and_a_body_until_close() -> None:
    events = b"".join(vllm_chat())
    sized = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(events) + events
    response, record = read([sized[:40], sized[40:]])
    assert response.finished and len(record.chunks) == 3
    response, record = read([b"HTTP/1.1 200 OK\r\n\r\n" + events])
    assert not response.finished and len(record.chunks) == 3
    response, record = read([b"HTTP/1.1 200 OK\r\n\r\n" + events], closed=True)
    assert response.finished and response.error is None and not response.keep_alive


def test_an_error_status_keeps_its_body_for_the_detail() -> None:
    body = b'{"error": "Unauthorized"}'
    response, record = read([b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n\r\n" % len(body) + body])
    assert response.status == 401 and response.finished and response.error_body == body and not record.chunks


def test_not_http_is_an_error() -> None:
    response, _ = read([b"SSH-2.0-OpenSSH\r\n\r\n"])
    assert isinstance(response.error, http1.BadResponse) and isinstance(response.error, ValueError)


def test_payload_carries_stream_options_and_key() -> None:
    from llmnest.bench.datasets import Prompt

    client = Client("http://x/v1/", "sk-1", "m", "chat", ignore_eos=True, temperature=0.0)
    body = client.payload(Prompt("hi there", 2, 9))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 9 and body["ignore_eos"] is True and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "user", "content": "hi there"}]
    assert client.headers["Authorization"] == "Bearer sk-1"
    assert client.url == "http://x/v1/chat/completions"
    assert "ignore_eos" not in Client("http://x/v1", None, "m", "completions").payload(Prompt("p", 1, 1))


def test_a_server_that_sends_no_usage_leaves_the_text_to_count() -> None:
    """Over a real socket: the request the bench writes, and an answer without usage keeping its text."""
    from llmnest.bench.datasets import Prompt

    stream = [chat({"role": "assistant", "content": ""}), chat({"content": "Hel"}), chat({"content": "lo"}, "stop"),
              event("[DONE]")]
    seen: list[bytes] = []

    async def go() -> RequestRecord:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head + await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])))
            writer.write(chunked(stream))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with server, Client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", "sk-1", "m") as client:
            return await client.send(Prompt("hi", 1, 4), RequestRecord(0, 0.0, 1, 4), 0.0)

    record = asyncio.run(go())
    assert record.ok and record.output_tokens is None and record.text == "Hello" and len(record.chunks) == 2
    assert record.written is not None and record.sent <= record.written <= record.ended
    head, body = seen[0].split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"Accept: text/event-stream" in head
    assert b"Authorization: Bearer sk-1" in head and json.loads(body)["stream_options"] == {"include_usage": True}
