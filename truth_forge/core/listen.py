"""Bind a listening TCP socket ourselves, for the servers truth-forge runs under uvicorn.

Why it exists: binding before uvicorn starts gives port 0 (a free port chosen by the OS, for tests
and benchmarks) and lets a caller print the real address before serving. Shared by `serve` and the
sandbox, which both need the same two details right.
"""

from __future__ import annotations

import socket


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say they are TCP,
    # and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
