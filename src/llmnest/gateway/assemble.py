"""Non-streamed answers built from the engine's stream. A non-streamed chat or completion is asked of
the engine as a stream with per-chunk usage, so that when the client leaves before the end the engine
stops at once and the key is billed exactly what was generated so far; a client that stays gets the
answer assembled in the engine's non-streamed shape. Requests whose answer the stream cannot rebuild
exactly (several choices, logprobs, echo, tools) stay non-streamed and are billed their prompt only
when abandoned (the engine reports nothing for an aborted non-streamed request)."""

from __future__ import annotations

import json
from typing import Any

# Fields whose non-streamed answer differs from the concatenated stream (or that vLLM streams in
# another shape): those requests go to the engine as they are.
UNASSEMBLED = ("tools", "functions", "logprobs", "top_logprobs", "prompt_logprobs", "echo", "best_of",
               "return_tokens_as_token_ids", "return_token_ids", "kv_transfer_params", "stream_options")


def assemblable(body: dict[str, Any]) -> bool:
    return body.get("n") in (None, 1) and not any(body.get(f) for f in UNASSEMBLED)


def streamed_body(body: dict[str, Any]) -> bytes:
    """The request as a stream with usage on every chunk."""
    return json.dumps({**body, "stream": True,
                       "stream_options": {"include_usage": True, "continuous_usage_stats": True}}).encode()


class Assembler:
    """Collects a chat or completions stream's chunks into one answer."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.head: dict[str, Any] = {}
        self.parts: dict[str, list[str]] = {}
        self.tool_calls: list[dict[str, Any]] = []
        self.role = "assistant"
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.usage: dict[str, Any] | None = None

    def add(self, events: bytes) -> None:
        """One or more whole server-sent events."""
        for event in events.split(b"\n\n"):
            if event.startswith(b"data:") and not event.startswith(b"data: [DONE]"):
                self._add(event)

    def _add(self, event: bytes) -> None:
        try:
            chunk = json.loads(event[5:])
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model")}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if choice.get("stop_reason") is not None:
                self.stop_reason = choice["stop_reason"]
            if not self.chat:
                self._text("text", choice.get("text"))
                continue
            delta = choice.get("delta") or {}
            self.role = delta.get("role") or self.role
            for field in ("content", "reasoning_content", "reasoning"):
                self._text(field, delta.get(field))

    def _text(self, field: str, text: Any) -> None:
        if isinstance(text, str) and text:
            self.parts.setdefault(field, []).append(text)

    def _joined(self, field: str) -> str | None:
        return "".join(self.parts[field]) if field in self.parts else None

    def answer(self) -> dict[str, Any]:
        usage = dict(self.usage or {})
        if usage:
            usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        if self.chat:
            message: dict[str, Any] = {"role": self.role, "content": self._joined("content") or "",
                                       "tool_calls": []}
            for field in ("reasoning_content", "reasoning"):
                if field in self.parts:
                    message[field] = self._joined(field)
            choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None}
            kind = "chat.completion"
        else:
            choice, kind = {"index": 0, "text": self._joined("text") or "", "logprobs": None}, "text_completion"
        choice.update(finish_reason=self.finish_reason, stop_reason=self.stop_reason)
        return {"id": self.head.get("id"), "object": kind, "created": self.head.get("created"),
                "model": self.head.get("model"), "choices": [choice], "usage": usage or None}
