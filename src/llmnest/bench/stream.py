"""Reading one streamed OpenAI response's body, at the lowest cost per chunk.

Everything here is pure: body bytes go in with the time they arrived (the HTTP framing is
`llmnest.http1`'s), the request record comes out. `EventReader` splits server-sent events on blank
lines and times each content event with the arrival time of the socket read that completed it (one
clock read per read, not per event).

A content event is one whose first choice carries non-empty generated text: chat `delta.content`,
reasoning content, or completions `text`; role-only and usage-only events are not. A response that
finishes without any text (EOS first, or one token that decodes to nothing) counts its finish event
instead, as `vllm bench serve` does. Output tokens come from the final `usage` event.
"""

from __future__ import annotations

try:  # a C JSON parser: several times faster on these small objects
    from orjson import loads
except ImportError:  # pragma: no cover - orjson is part of the bench extra
    from json import loads

from typing import Any

from .. import sse
from .record import RequestRecord


class EventReader:
    """SSE events of one response -> `record` (content-chunk times from `start`, usage, errors).

    Events are taken a block at a time: all complete events of one read share its arrival time, so a
    block of compact vLLM-style JSON is read by counting its non-empty content fields (C-speed byte
    scans, no object per event) and parsing only the usage event. Anything else (a server that puts
    spaces in its JSON, reasoning fields, errors, a finish before any text) goes event by event
    through a JSON parser. Both ways give the same record. (A JSON string cannot hold an unescaped
    quote, so text never matches the quoted key patterns.)"""

    __slots__ = ("record", "chat", "start", "split", "done", "blocks", "key", "empty", "compact")

    def __init__(self, record: RequestRecord, chat: bool, start: float) -> None:
        self.record = record
        self.chat = chat
        self.start = start
        self.split = sse.Splitter()
        self.done = False  # [DONE] or an error event was read
        self.blocks: list[bytes] | None = []  # the events so far, to recover the text if no usage comes
        self.key = b'"content":"' if chat else b'"text":"'
        self.empty = b'"content":""' if chat else b'"text":""'
        self.compact: bool | None = None  # JSON without spaces (as vLLM and SGLang send it): byte counts work

    def feed(self, data: bytes, arrived: float) -> list[float]:
        """Take the next body bytes, read at absolute time `arrived`. Returns the content chunks' times so
        far: once there are any, reads may be gathered (see http1's sink). Raises sse.EventTooLarge."""
        if not self.done:
            split = self.split
            if split.lf and not split.buf and data[-2:] == b"\n\n":  # the usual read, whole LF events:
                self.block(data, arrived)  # what split.feed would return, without the call (one per read)
            elif block := split.feed(data):
                self.block(block, arrived)
        return self.record.chunks

    def block(self, block: bytes, arrived: float) -> None:
        """Whole events (the block ends with a blank line) read at `arrived`."""
        if self.blocks is not None:
            self.blocks.append(block)
        at = arrived - self.start
        find = block.find  # (find is cheaper than `in` on bytes)
        if self.compact is None:  # the server's JSON layout, from its first events
            self.compact = find(b'": ') < 0 and find(b'", "') < 0
        if not self.compact or find(b"reasoning") >= 0 or find(b'"error"') >= 0:
            self._events(block, at, None)
            return
        n = block.count(self.key)
        if n:
            n -= block.count(self.empty)
        record = self.record
        if n > 0:
            if n == 1:
                record.chunks.append(at)
            else:
                record.chunks.extend([at] * n)
        elif not record.chunks and find(b'"finish_reason":"') >= 0:
            self._events(block, at, None)  # a finish before any text counts as the first chunk
            return
        if find(b'"usage":{') >= 0:
            self._usage(block)
        if find(sse.DONE) >= 0:
            self.done = True

    def _usage(self, block: bytes) -> None:
        at = block.rfind(b'"usage":{')
        start = block.rfind(b"\n\n", 0, at)
        event = block[start + 2 if start >= 0 else 0:block.find(b"\n\n", at)]
        payload = sse.data(event)
        if payload is not None and b'"usage"' in payload:
            self._take_usage(loads(payload).get("usage"))

    def _take_usage(self, usage: Any) -> None:
        if usage and isinstance(usage, dict):
            self.record.output_tokens = usage.get("completion_tokens")
            self.record.prompt_tokens = usage.get("prompt_tokens")
            self.blocks = None

    def text(self) -> str:
        """The generated text (to count tokens with a tokenizer when the server sent no usage)."""
        texts: list[str] = []
        scratch = EventReader(RequestRecord(0, 0.0, 0, 0), self.chat, 0.0)
        for block in self.blocks or []:
            scratch._events(block, 0.0, texts)
        return "".join(texts)

    def _events(self, block: bytes, at: float, texts: list[str] | None) -> None:
        """Event by event, each `data:` payload through the JSON parser."""
        for event in sse.events(block):
            if self.done:
                break
            payload = sse.data(event)
            if payload is not None:  # (events without data: comments such as pings, names, ids)
                self._data(payload.strip(), at, texts)

    def _data(self, payload: bytes, at: float, texts: list[str] | None) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        obj = loads(payload)
        if type(obj) is not dict:
            return
        record = self.record
        if obj.get("error"):
            err = obj["error"]
            record.error = "stream error"
            record.detail = str(err.get("message") if isinstance(err, dict) else err)[:300]
            self.done = True
            return
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            if self.chat:
                delta = choice.get("delta") or {}
                text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
            else:
                text = choice.get("text")
            if text:
                record.chunks.append(at)
                if texts is not None:
                    texts.append(text)
            elif choice.get("finish_reason") and not record.chunks:
                record.chunks.append(at)  # finished without visible text (EOS first, a partial byte)
        self._take_usage(obj.get("usage"))
