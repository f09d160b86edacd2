"""Why a connection to Twenty was never made, in words a person can act on, and whether waiting helps.

httpx calls every such failure `ConnectError`; the reason is in the exception it chains from (a
`socket.gaierror`, a `ConnectionRefusedError`, an `ssl.SSLError`). Told apart, they need different
handling: a name that does not resolve or a TLS handshake against a plain-HTTP server cannot succeed
on a second try (fail at once), a refused connection may be a server starting (retry briefly).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

REFUSED_RETRIES = 2  # about 1.5 s of waiting: a server restarting, not one that is not there
_CHAIN_LIMIT = 10
# OpenSSL's words when the other side answered the ClientHello with something that is not TLS.
_NOT_TLS = ("wrong_version_number", "wrong version number", "record_layer_failure", "record layer failure",
            "packet length too long", "http_request", "unknown protocol")


@dataclass(frozen=True)
class Unreachable:
    kind: str  # "refused", "name", "name_temporary", "tls_plain_http", "tls", "other"
    reason: str  # what happened, naming the host and port (never a key)
    hopeless: bool  # waiting cannot help: the URL (or the certificate) must change


def _chain(exc: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(links) < _CHAIN_LIMIT:
        links.append(current)
        current = current.__cause__ or current.__context__
    return links


def classify(exc: BaseException, base_url: str) -> Unreachable:
    """The reason a connect to `base_url` failed, from the exception httpx raised."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    links = _chain(exc)
    said = " ".join(str(link) for link in links).lower()
    for link in links:
        if isinstance(link, socket.gaierror):
            if link.errno == socket.EAI_AGAIN:
                return Unreachable("name_temporary", f"the name {host} could not be resolved just now "
                                   "(temporary DNS failure)", hopeless=False)
            return Unreachable("name", f"the name {host} does not resolve (no such host)", hopeless=True)
        if isinstance(link, ssl.SSLError):
            return _tls(said, host, port)
        if isinstance(link, ConnectionRefusedError):
            return _refused(host, port)
    # Some backends keep only the words; the same reasons, read from them.
    if "name or service not known" in said or "nodename nor servname" in said or "no address associated" in said:
        return Unreachable("name", f"the name {host} does not resolve (no such host)", hopeless=True)
    if "[ssl" in said or "certificate" in said:
        return _tls(said, host, port)
    if "connection refused" in said:
        return _refused(host, port)
    return Unreachable("other", f"{type(exc).__name__}: {str(exc) or 'no connection'}", hopeless=False)


def _refused(host: str, port: int) -> Unreachable:
    return Unreachable("refused", f"connection refused: nothing listens on {host}:{port}", hopeless=False)


def _tls(said: str, host: str, port: int) -> Unreachable:
    if any(words in said for words in _NOT_TLS):
        return Unreachable("tls_plain_http", f"the TLS handshake with {host}:{port} failed: it answers plain "
                           "HTTP, not HTTPS (use http:// for it, or the HTTPS port)", hopeless=True)
    if "certificate" in said:
        return Unreachable("tls", f"the TLS certificate of {host}:{port} is not trusted: {said[:200]}",
                           hopeless=True)
    return Unreachable("tls", f"the TLS handshake with {host}:{port} failed: {said[:200]}", hopeless=True)
