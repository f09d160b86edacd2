"""A connection to Twenty that is never made says why (refused, no such host, TLS against plain HTTP),
names the base URL and never the key, and spends no retries on what waiting cannot mend. Real sockets
on 127.0.0.1 and a real resolver lookup of a reserved name (`.invalid` never resolves, RFC 6761)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import closing

import pytest

from truth_forge.twenty.errors import NextStep, TwentyConfigError, TwentyTransientError
from truth_forge.twenty.transport import RetryPolicy, Transport
from truth_forge.twenty.unreachable import REFUSED_RETRIES

KEY = "never-shown-key-4a1f"


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"data": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def plain_http() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def transport(url: str, waits: list[float], max_retries: int = 6) -> Transport:
    return Transport(url, KEY, timeout=5, retry=RetryPolicy(max_retries=max_retries), sleep=waits.append)


def test_refused_gets_a_short_retry_and_says_nothing_listens() -> None:
    url, waits = f"http://127.0.0.1:{refused_port()}", []
    with closing(transport(url, waits)) as api, pytest.raises(TwentyTransientError) as info:
        api.request("GET", "/rest/people")
    assert len(waits) == REFUSED_RETRIES < 6 and sum(waits) <= 1.5
    assert f"at {url} (TWENTY_BASE_URL): connection refused: nothing listens on 127.0.0.1:" in str(info.value)
    assert "ConnectError" not in str(info.value) and KEY not in str(info.value)


def test_a_name_that_does_not_resolve_fails_at_once() -> None:
    waits: list[float] = []
    with closing(transport("https://twenty.truth-forge.invalid", waits)) as api, pytest.raises(TwentyConfigError) as info:
        api.request("GET", "/rest/people")
    assert waits == [] and info.value.next_step is NextStep.FIX_CONFIG
    assert "the name twenty.truth-forge.invalid does not resolve" in str(info.value)
    assert "https://twenty.truth-forge.invalid (TWENTY_BASE_URL)" in str(info.value) and KEY not in str(info.value)


def test_https_against_a_plain_http_server_fails_at_once(plain_http: http.server.HTTPServer) -> None:
    url, waits = f"https://127.0.0.1:{plain_http.server_port}", []
    with closing(transport(url, waits)) as api, pytest.raises(TwentyConfigError) as info:
        api.request("GET", "/rest/people")
    assert waits == []
    assert "answers plain HTTP, not HTTPS" in str(info.value) and url in str(info.value)
    assert KEY not in str(info.value)


def test_once_twenty_has_answered_a_refused_connection_is_an_outage_with_every_retry(
        plain_http: http.server.HTTPServer) -> None:
    url, waits = f"http://127.0.0.1:{plain_http.server_port}", []
    with closing(transport(url, waits, max_retries=4)) as api:
        api.request("GET", "/rest/people")
        plain_http.shutdown()
        plain_http.server_close()  # the port now refuses: Twenty restarting, say
        with pytest.raises(TwentyTransientError) as info:
            api.request("GET", "/rest/people")
    assert len(waits) == 4 and "connection refused" in str(info.value)
