"""The SSE reader on recorded stream bytes: which events count as content, usage, errors, odd splits."""

from __future__ import annotations

import asyncio
import json

from llmnest.bench.request import Client, RequestRecord


def event(obj: dict | str) -> bytes:
    return b"data: " + (obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n\n"


def chat(delta: dict, finish: str | None = None) -> bytes:
    return event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


# What vLLM streams for a chat request: a role-only chunk, content chunks, the usage chunk, [DONE].
CHAT_STREAM = [
    chat({"role": "assistant", "content": ""}),
    chat({"content": "Hel"}),
    chat({"content": "lo"}),
    chat({"content": "!"}, finish="stop"),
    event({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}),
    event("[DONE]"),
]


class Content:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self):
        for piece in self.pieces:
            await asyncio.sleep(0.01)  # arrivals are spread out so their times differ
            yield piece


class Response:
    def __init__(self, pieces: list[bytes]) -> None:
        self.content = Content(pieces)


def read(pieces: list[bytes], endpoint: str = "chat") -> tuple[RequestRecord, list[str]]:
    client = Client("http://x/v1", None, "m", endpoint)  # type: ignore[arg-type]
    record = RequestRecord(0, 0.0, 5, 16)
    texts: list[str] = []
    asyncio.run(client._read_stream(Response(pieces), record, texts, 0.0))
    return record, texts


def test_role_chunk_is_not_content_and_usage_gives_the_token_counts() -> None:
    record, texts = read(CHAT_STREAM)
    assert texts == ["Hel", "lo", "!"]
    assert len(record.chunks) == 3
    assert record.chunks == sorted(record.chunks) and record.chunks[0] > 0
    assert (record.output_tokens, record.prompt_tokens) == (3, 12)


def test_events_split_across_reads_and_several_per_read() -> None:
    blob = b"".join(CHAT_STREAM)
    pieces = [blob[i:i + 7] for i in range(0, len(blob), 7)]  # every event cut mid-way
    record, texts = read(pieces)
    assert "".join(texts) == "Hello!" and record.output_tokens == 3
    record, texts = read([blob])  # everything in one read: one arrival time for all chunks
    assert len(set(record.chunks)) == 1 and len(record.chunks) == 3


def test_crlf_line_ends_and_comments() -> None:
    crlf = [b": ping\r\n\r\n", *(p.replace(b"\n", b"\r\n") for p in CHAT_STREAM)]
    record, texts = read(crlf)
    assert "".join(texts) == "Hello!" and record.output_tokens == 3


def test_reasoning_content_counts_as_generated() -> None:
    record, texts = read([chat({"role": "assistant"}), chat({"reasoning_content": "hmm"}), chat({"content": "ok"}),
                          event("[DONE]")])
    assert texts == ["hmm", "ok"] and record.output_tokens is None


def test_completions_text() -> None:
    stream = [event({"choices": [{"index": 0, "text": " Paris"}]}), event({"choices": [{"index": 0, "text": "."}]}),
              event({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}), event("[DONE]")]
    record, texts = read(stream, "completions")
    assert texts == [" Paris", "."] and record.output_tokens == 2


def test_error_event_ends_the_request_as_a_stream_error() -> None:
    record, _ = read([chat({"content": "a"}), event({"error": {"message": "engine died", "code": 500}}),
                      chat({"content": "never read"})])
    assert record.error == "stream error" and record.detail == "engine died"
    assert len(record.chunks) == 1


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


def test_a_response_without_text_is_timed_at_its_finish_event() -> None:
    """One token that decodes to nothing (or EOS first): vLLM counts it, with TTFT at the finish chunk."""
    record, texts = read([chat({"role": "assistant", "content": ""}), chat({"content": ""}, finish="length"),
                          event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
                          event("[DONE]")])
    assert texts == [] and len(record.chunks) == 1 and record.output_tokens == 1
    record, _ = read([chat({"content": "a"}), chat({"content": ""}, finish="stop"), event("[DONE]")])
    assert len(record.chunks) == 1  # a finish after text adds no chunk
