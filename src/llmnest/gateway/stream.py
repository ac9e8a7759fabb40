"""Reading an engine's server-sent events: take the engine's `usage` out of the stream and hand the
client exactly the events it asked for (the gateway asks for usage whether or not the client did)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .. import sse
from ..sse import DONE


def upstream_body(body: dict[str, Any]) -> tuple[dict[str, Any], bool, bool]:
    """The body sent to the engine (usage requested, per chunk too, so a cut stream still has a count),
    and whether the client itself asked for usage and for per-chunk usage."""
    options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
    wants_usage, wants_continuous = bool(options.get("include_usage")), bool(options.get("continuous_usage_stats"))
    return ({**body, "stream_options": {**options, "include_usage": True, "continuous_usage_stats": True}},
            wants_usage, wants_continuous)


class StreamTap:
    """Splits an SSE byte stream into events, notes usage, chunks and the first token's time, and
    drops or trims what the client did not ask for."""

    def __init__(self, wants_usage: bool, wants_continuous: bool) -> None:
        self.wants_usage = wants_usage
        self.wants_continuous = wants_continuous
        self._usage: dict[str, Any] | None = None
        self._usage_raw: bytes | None = None
        self.content_chunks = 0  # chunks with choices, the count when the engine sent no usage
        self.first_token_at: float | None = None
        self.done = False
        self._split = sse.Splitter()

    def feed(self, data: bytes) -> list[bytes]:
        """Events (each ending in a blank line) to pass on, from the next bytes of the stream. Raises
        sse.EventTooLarge."""
        block = self._split.feed(data)
        if not block:
            return []
        fast = self._block(block)
        if fast is not None:
            return [fast] if fast else []
        out: list[bytes] = []
        for event in sse.events(block):
            kept = self._event(event)
            if kept is not None:
                out.append(kept + b"\n\n")
        return out

    def _block(self, block: bytes) -> bytes | None:
        """Whole events read as one block, the usual case mid-stream (every event one compact `data:`
        line with choices, usage last or absent): what to pass on, found by C-speed scans and one
        regex substitution instead of per-event work. None for anything else (then event by event)."""
        events = block.count(b"\n\n")
        if (block.count(b"\n") != 2 * events or not block.startswith(b"data: ")
                or block.count(b"\n\ndata: ") != events - 1 or block.find(b"data: [DONE]") >= 0
                or block.find(b'"choices":[]') >= 0 or block.find(b'"choices": []') >= 0):
            return None
        at = block.rfind(b',"usage":{')
        if at >= 0:
            if self.wants_continuous:
                if block.count(b',"usage":{') != events or not _USAGE_TAIL.search(block, at):
                    return None
                out = block
            else:
                out, n = _USAGE_TAIL.subn(b"}\n\n", block)
                if n != events:
                    return None
            self._usage_raw = block[at + 9:-3]
        elif block.find(b'"usage":') >= 0:
            return None
        else:
            out = block
        self.content_chunks += events
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        return out

    def flush(self) -> list[bytes]:
        """Whatever is left when the stream ends without a final blank line."""
        rest = self._split.rest()
        kept = self._event(rest) if rest else None
        return [kept + b"\n\n"] if kept is not None else []

    def _event(self, event: bytes) -> bytes | None:
        if event.startswith(DONE):
            self.done = True
            return event
        if not event.startswith(b"data:"):
            return event
        counted = b'"choices":[]' not in event and b'"choices": []' not in event
        if counted:
            self.content_chunks += 1
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
        at = event.rfind(b'"usage":')
        if at < 0:
            return event
        raw, stripped = _trailing_usage(event, at)
        if stripped is None:  # usage is not the chunk's last field: take the slow, general way
            return self._event_parsed(event)
        if raw != b"null":
            self._usage_raw = raw  # decoded only when asked for (once per request, not per chunk)
        if not counted:  # the usage-only chunk at the end
            return event if self.wants_usage else None
        return event if self.wants_continuous else stripped

    def _event_parsed(self, event: bytes) -> bytes | None:
        try:
            obj = json.loads(event[5:])
        except ValueError:
            return event
        if not isinstance(obj, dict) or "usage" not in obj:
            return event
        if obj["usage"]:
            self._usage, self._usage_raw = obj["usage"], None
        if not obj.get("choices"):
            return event if self.wants_usage else None
        if self.wants_continuous:
            return event
        del obj["usage"]
        return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def usage(self) -> dict[str, Any] | None:
        """The engine's latest usage (per chunk with continuous usage, else the final one)."""
        if self._usage_raw is not None:
            try:
                self._usage = json.loads(self._usage_raw)
            except ValueError:
                pass
            self._usage_raw = None
        return self._usage

    @property
    def prompt_tokens(self) -> int:
        return int((self.usage or {}).get("prompt_tokens") or 0)

    @property
    def completion_tokens(self) -> int:
        """The engine's count; without one, the number of chunks seen (one token each in vLLM)."""
        return int(self.usage["completion_tokens"] or 0) if self.usage else self.content_chunks


USAGE_KEYS = {b"prompt_tokens", b"completion_tokens", b"total_tokens", b"prompt_tokens_details",
              b"completion_tokens_details", b"cached_tokens", b"reasoning_tokens", b"audio_tokens",
              b"accepted_prediction_tokens", b"rejected_prediction_tokens"}
_KEY = re.compile(rb'"([^"\\]*)"\s*:')
# A compact top-level `"usage":{...}` that ends its event (exactly one brace closes the chunk after it).
_USAGE_TAIL = re.compile(rb',"usage":\{[^{}\n]*\}\}\n\n')


def _trailing_usage(event: bytes, at: int) -> tuple[bytes | None, bytes | None]:
    """When `"usage":...` is the chunk's last field (as vLLM and SGLang write it): the usage's raw JSON
    and the event without it, found without decoding the chunk. Otherwise (None, None)."""
    head, tail = event[:at].rstrip(), event[at + 8:].strip()
    if not head.endswith(b",") or not tail.endswith(b"}") or not set(_KEY.findall(tail)) <= USAGE_KEYS:
        return None, None
    return tail[:-1].strip(), head[:-1] + b"}"
