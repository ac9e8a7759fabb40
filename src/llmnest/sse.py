"""Server-sent events read from a response body as it arrives, shared by the gateway (relaying an
engine's stream) and the benchmark (timing it).

The framing only: `Splitter` turns reads cut anywhere into blocks of whole events (line ends made LF,
so CRLF and CR servers read the same), `events` splits a block, `data` is an event's payload. What an
event means (usage, text, timing) is the caller's. A block is one `bytes`, so callers can scan it at C
speed (`count`, `find`) instead of handling event by event; in the usual read (whole events, LF line
ends) `feed` costs two C-speed byte checks and no copy.
"""

from __future__ import annotations

DONE = b"data: [DONE]"
MAX_EVENT = 8 * 1024 * 1024  # bytes an unfinished event may hold before the stream is refused


class EventTooLarge(ValueError):
    """An event went on past MAX_EVENT bytes without its blank line."""


class Splitter:
    """Reads in, blocks of whole events out; the bytes of the event in progress are kept in `buf`.

    The stream's first line end sets its style: after an LF one, reads are taken as they are (nothing
    scanned for CR); after a CRLF or CR one, every read's line ends are made LF."""

    __slots__ = ("buf", "max_event", "lf", "cr")

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self.buf = b""
        self.max_event = max_event
        self.lf: bool | None = None  # the line ends are LF (None: no line end seen yet)
        self.cr = False  # the last read ended in CR: an LF that starts the next one is the same line end

    def feed(self, data: bytes) -> bytes:
        """The events `data` completes, as one block (each event ends in a blank line), or b""."""
        if not self.lf:
            data = self._to_lf(data)
        buf = self.buf + data if self.buf else data
        cut = buf.rfind(b"\n\n") + 2
        if cut == len(buf) and cut > 1:  # the usual read: whole events
            self.buf = b""
            return buf
        block, rest = (buf[:cut], buf[cut:]) if cut > 1 else (b"", buf)
        if len(rest) > self.max_event:
            self.buf = b""
            raise EventTooLarge(f"an event is over {self.max_event} bytes without its end")
        self.buf = rest
        return block

    def _to_lf(self, data: bytes) -> bytes:
        if self.lf is None:
            lf, cr = data.find(b"\n"), data.find(b"\r")
            if cr < 0 and lf < 0:
                return data
            self.lf = cr < 0 or 0 <= lf < cr
            if self.lf:
                return data
        if self.cr:
            self.cr = False
            if data.startswith(b"\n"):
                data = data[1:]
        self.cr = data.endswith(b"\r")
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def rest(self) -> bytes:
        """What is left when the body ends without a final blank line (the stream is done with it)."""
        rest, self.buf = self.buf.strip(), b""
        return rest


def events(block: bytes) -> list[bytes]:
    """The events of a block (without their blank lines)."""
    return block[:-2].split(b"\n\n")


def data(event: bytes) -> bytes | None:
    """The event's data: its `data:` lines joined by LF (one space after the colon dropped); None when
    it has none (a comment such as a keep-alive ping, an event name or id alone)."""
    if event.startswith(b"data: ") and event.find(b"\n") < 0:  # the usual event: one data line
        return event[6:]
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
