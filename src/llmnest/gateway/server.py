"""Running the gateway: in the foreground (the CLI, supervised by the lifecycle) or in a thread."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from .app import Gateway
from .http_limits import protocol


def config(gateway: Gateway, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn with the gateway's HTTP limits on its own httptools protocol (see http_limits)."""
    http = protocol(gateway.limits, gateway.metrics.refused_by)
    return uvicorn.Config(gateway.app, host=host, port=port, log_level=log_level, access_log=False, interface="asgi3",
                          timeout_graceful_shutdown=10, lifespan="on", http=http)


def serve(gateway: Gateway, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGINT/SIGTERM (in-flight requests get up to 10 s, their usage is written)."""
    uvicorn.Server(config(gateway, host, port, log_level="info")).run()


class ThreadedServer:
    """The gateway on its own event loop in a background thread (tests, benchmarks)."""

    def __init__(self, gateway: Gateway, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = uvicorn.Server(config(gateway, host, port))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
