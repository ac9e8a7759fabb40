"""tests.conftest.free_port: why it takes ports below the kernel's ephemeral range, and that it does."""

from __future__ import annotations

import socket

from tests.conftest import _ephemeral_low, free_port


def test_an_outgoing_connection_on_a_port_makes_a_later_server_bind_fail() -> None:
    """The failure free_port avoids: a port from bind(0) is in the range the kernel also gives the local end
    of outgoing connections, and one holding it when the server binds (SO_REUSEADDR, as uvicorn) fails it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port >= _ephemeral_low()
    with socket.socket() as listener, socket.socket() as client, socket.socket() as server:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.bind(("127.0.0.1", port))  # what connect() may pick by itself, in any process
        client.connect(listener.getsockname())
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("0.0.0.0", port))
        except OSError as exc:
            assert exc.errno == 98  # EADDRINUSE
        else:
            raise AssertionError("the bind succeeded: the kernel no longer makes this race")


def test_free_ports_are_below_the_ephemeral_range_free_and_never_repeated() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports) and max(ports) < _ephemeral_low()
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", port))
