"""What one benchmark request did: the record every metric is computed from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """What one request did. Times are seconds: `scheduled`, `sent`, `written`, `ended` from the stage start;
    `chunks` (arrival of each content chunk) from `sent`. `sent` is when the request's clock starts (before
    a connection is taken or opened, as in `vllm bench serve`: TTFT and E2EL count from it); `written` is
    when its bytes were handed to the socket (None if they never were): the schedule lag is `written -
    scheduled`, everything the client did before the request went out included."""

    index: int
    scheduled: float
    prompt_len: int
    max_tokens: int
    sent: float = 0.0
    written: float | None = None
    ended: float = 0.0
    ok: bool = False
    chunks: list[float] = field(default_factory=list)
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tokens_from: str = "usage"
    error: str | None = None
    detail: str | None = None
    text: str | None = None  # kept only when the server sent no usage (to count tokens)
