"""Reading one streamed OpenAI response from raw socket bytes, at the lowest cost per chunk.

Everything here is pure: bytes go in with the time they arrived, the request record comes out.
`Response` parses the HTTP/1.1 head and body framing (chunked, sized, or until close) and hands the
body to `EventReader`, which splits server-sent events on blank lines and times each content event
with the arrival time of the socket read that completed it (one clock read per read, not per event).

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

from itertools import repeat
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

    def feed(self, data: bytes, arrived: float) -> None:
        """Take the next body bytes, read at absolute time `arrived`. Raises sse.EventTooLarge."""
        if not self.done and (block := self.split.feed(data)):
            self.block(block, arrived)

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


class Response:
    """One HTTP/1.1 response fed as it arrives. A 200 body goes to `events`; any other body is kept
    (its first bytes become the failure detail). `finished` once the body is complete."""

    __slots__ = ("events", "status", "keep_alive", "finished", "head", "chunked", "left", "skip", "pending",
                 "trailer", "error_body", "streaming")

    def __init__(self, events: EventReader) -> None:
        self.events = events
        self.status = 0
        self.keep_alive = True
        self.finished = False
        self.head = b""
        self.chunked = False
        self.left: int | None = None  # body bytes still expected: of this chunk (chunked) or of the body
        self.skip = 0  # CRLF bytes after a chunk's data still to skip
        self.pending = b""  # an incomplete chunk-size line
        self.trailer = False  # the last (zero) chunk was read; the trailer's blank line comes next
        self.error_body = b""
        self.streaming = False  # a 200 with chunked framing: the one-chunk-per-read fast path applies

    def feed(self, data: bytes, arrived: float) -> None:
        if self.streaming and not (self.pending or self.left or self.skip):
            eol = data.find(b"\r\n")  # the usual read: exactly one chunk of whole events
            if 0 < eol < 9 and data.endswith(b"\n\n\r\n"):
                try:
                    size = int(data[:eol], 16)
                except ValueError:
                    size = -1
                events = self.events
                if eol + size + 4 == len(data) and not events.split.buf and not events.done:
                    events.block(data[eol + 2:-2], arrived)
                    return
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = self.head[end + 4:]
            self._parse_head(self.head[:end])
            self.head = b""
            if self.left == 0 and not self.chunked:
                self.finished = True
                return
        body = self._unchunk(data) if self.chunked else self._sized(data)
        if body:
            if self.status == 200:
                if not self.events.done:
                    self.events.feed(body, arrived)
            elif len(self.error_body) < 300:
                self.error_body += body

    def eof(self) -> bool:
        """The connection closed: True when that ended the body properly (a body read until close)."""
        if not self.finished and self.status and not self.chunked and self.left is None:
            self.finished = True
            return True
        return self.finished

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
        self.status = int(parts[1])
        self.keep_alive = parts[0] != b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self.chunked = True
            elif name == b"content-length":
                self.left = int(value)
            elif name == b"connection":
                self.keep_alive = value == b"keep-alive" or (self.keep_alive and value != b"close")
        if self.chunked:
            self.left = 0
            self.streaming = self.status == 200
        elif self.left is None:
            self.keep_alive = False  # the body ends when the connection closes

    def _sized(self, data: bytes) -> bytes:
        if self.left is not None:
            data = data[: self.left]
            self.left -= len(data)
            if self.left == 0:
                self.finished = True
        return data

    def _unchunk(self, data: bytes) -> bytes:
        """The payload bytes in `data` under chunked framing (sizes, CRLFs and trailer removed)."""
        buf = self.pending + data if self.pending else data
        self.pending = b""
        if not (self.left or self.skip or self.trailer):
            eol = buf.find(b"\r\n")
            if 0 < eol < 9 and buf.endswith(b"\r\n"):  # exactly one chunk
                try:
                    size = int(buf[:eol], 16)
                except ValueError:
                    size = 0
                if size and eol + size + 4 == len(buf):
                    return buf[eol + 2:-2]
            body = self._whole_chunks(buf)
            if body is not None:
                return body
        return self._walk(buf)

    def _whole_chunks(self, buf: bytes) -> bytes | None:
        """Every complete chunk in `buf` at once (C-speed split and checks), the rest kept for later;
        None when a chunk's data holds a CRLF or a size line has extensions (then `_walk` reads it)."""
        parts = buf.split(b"\r\n")
        rest = parts.pop()
        if len(parts) % 2:  # a size line whose data is not all here yet
            rest = parts.pop() + b"\r\n" + rest
        sizes, datas = parts[0::2], parts[1::2]
        try:
            if list(map(len, datas)) != list(map(int, sizes, repeat(16))):
                return None
        except ValueError:
            return None
        if b"0" in sizes:  # the last chunk (no trailer): the body is complete
            last = sizes.index(b"0")
            datas = datas[:last]
            self.finished = True
            self.keep_alive = self.keep_alive and last == len(sizes) - 1 and not rest
        else:
            self.pending = rest
        return datas[0] if len(datas) == 1 else b"".join(datas)

    def _walk(self, buf: bytes) -> bytes:
        """Chunked framing read byte-exactly, any split, with chunk extensions and trailers."""
        out: list[bytes] = []
        pos, n = 0, len(buf)
        left = self.left or 0
        while pos < n:
            if left:
                take = min(left, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                left -= take
                if not left:
                    self.skip = 2
                continue
            if self.skip:
                take = min(self.skip, n - pos)
                pos += take
                self.skip -= take
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                self.pending = buf[pos:]
                break
            if self.trailer:  # trailer lines, then the blank line that ends the body
                blank = eol == pos
                pos = eol + 2
                if blank:
                    self.finished = True
                    self.keep_alive = self.keep_alive and pos == n
                    break
                continue
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                self.trailer = True
            left = size
        self.left = left
        return out[0] if len(out) == 1 else b"".join(out)




def status_detail(response: Response) -> str:
    """What a non-200 answer said, for the failure record."""
    return response.error_body.decode("utf-8", "replace")[:300]


def parse_url(url: str) -> tuple[str, str, int, str]:
    """'http://host:port/v1/chat' -> (scheme, host, port, path)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, parts.path or "/"


def request_head(method: str, path: str, host: str, port: int, headers: dict[str, str], length: int) -> bytes:
    """The head of one HTTP/1.1 request with a body of `length` bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream",
             f"Content-Length: {length}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
