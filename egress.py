"""The egress guard: what a fetch may connect to, and a loopback HTTP proxy that enforces it.

yt-dlp, FFmpeg and gdown accept a proxy URL but no caller's HTTP session, so every connection
they open goes through `EgressGuard`, a proxy that lives for one fetch. It resolves each
destination itself, refuses private addresses and connects to the address it checked, so a
redirect (or a DNS answer that changes between check and use) cannot reach the internal
network. `is_public_ip` is the one address policy; `resolve` the one resolver (the check
before a fetch and the guard both use them, and tests replace them here).
"""
from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import threading
import time
from typing import Protocol, cast
from urllib.parse import urlsplit

log = logging.getLogger("ezra.fetch")

# A tunnel with no traffic either way for this long is dead; closing it frees its thread.
TUNNEL_IDLE_SECONDS = 120.0


class Cancel(Protocol):
    """threading.Event, or anything else that answers is_set() (the pipeline's lease view)."""

    def is_set(self) -> bool: ...


# -- addresses ------------------------------------------------------------------------------

# NAT64 (RFC 6052) embeds an IPv4 address that a gateway would reach for us.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def resolve(host: str, port: int) -> list[tuple[str, int]]:
    """(address, port) pairs for host. The one resolver both the check and the guard use."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


def is_public_ip(text: str) -> bool:
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            text.split("%", 1)[0])  # drop an IPv6 scope id ("fe80::1%eth0")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address are judged by that address.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip.is_site_local:  # fec0::/10 is neither private nor reserved to `ipaddress`
            return False
    # is_global alone lets multicast through, hence the explicit list.
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


# -- the proxy ----------------------------------------------------------------------------

class _Refused(Exception):
    pass


# Headers that describe one hop; the guard speaks HTTP/1.0-style "one request, then close".
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                          "proxy-authenticate", "upgrade"})
_MAX_HEAD = 64 * 1024


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The HTTP head up to the blank line, and whatever arrived after it."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise ValueError("HTTP head too large")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the HTTP head")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _close_after_one(head: bytes, first_line: str | None = None) -> bytes:
    """The head without hop-by-hop headers and with `Connection: close`."""
    lines = head.decode("latin-1").split("\r\n")
    kept = [line for line in lines[1:]
            if line and line.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
    return "\r\n".join([first_line or lines[0], *kept, "Connection: close", "", ""]).encode(
        "latin-1")


def _split_authority(authority: str) -> tuple[str, int]:
    parts = urlsplit("//" + authority)
    if not parts.hostname:
        raise ValueError(f"bad CONNECT target {authority!r}")
    return parts.hostname, parts.port or 443


class _CancelEvent(threading.Event):
    """A real Event (what gdown expects) that also becomes set the moment a duck-typed
    `source` does: every is_set() asks it."""

    def __init__(self, source: Cancel | None):
        super().__init__()
        self._source = source

    def is_set(self) -> bool:
        if not super().is_set() and self._source is not None and self._source.is_set():
            self.set()
        return super().is_set()


class EgressGuard:
    """A loopback HTTP proxy for one fetch that connects only to public addresses.

    CONNECT tunnels (https) are piped as they are; absolute-form requests (plain http, used by
    tests and FFmpeg) are forwarded one per connection. `refused` names the first destination
    turned away, so the caller can tell "private address" from an ordinary network failure.
    It also offers a duck-typed `cancel` as a real Event (`cancelled`) and cuts open tunnels
    when it fires, which stops even an FFmpeg child that has no cancel hook.
    """

    def __init__(self, *, allow_private: bool, timeout: float, cancel: Cancel | None = None):
        self.allow_private = allow_private
        self.timeout = timeout
        self.cancelled = _CancelEvent(cancel)
        self._cut = False
        self.refused: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # the accept loop doubles as the cancel poller
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept_loop, name="fetch-guard",
                                        daemon=True)

    def __enter__(self) -> EgressGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() at once (Linux)
        except OSError:
            pass
        self._thread.join(timeout=2)
        self._listener.close()
        self._close_all()

    # - plumbing -

    def poll_cancel(self) -> bool:
        if not self.cancelled.is_set():
            return False
        if not self._cut:  # once: cut every open tunnel
            self._cut = True
            self._close_all()
        return True

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._open.add(sock)
        return sock

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            self.poll_cancel()  # after a cancel, connections are still taken, then refused
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(self.timeout)
            threading.Thread(target=self._serve, args=(self._track(client),),
                             name="fetch-guard-tunnel", daemon=True).start()

    def _connect(self, host: str, port: int) -> socket.socket:
        if self.cancelled.is_set():
            raise ConnectionAbortedError("cancelled")
        addresses = resolve(host, port)
        if not addresses:
            raise OSError(f"{host} has no addresses")
        if not self.allow_private:
            for address, _ in addresses:
                if not is_public_ip(address):
                    with self._lock:
                        self.refused = self.refused or f"{host}:{port} ({address})"
                    log.warning("fetch guard refused %s:%s (%s)", host, port, address)
                    raise _Refused(address)
        error: OSError | None = None
        for address, address_port in addresses:  # connect to exactly what was checked
            try:
                return self._track(socket.create_connection((address, address_port),
                                                            timeout=self.timeout))
            except OSError as exc:
                error = exc
        raise error or OSError(f"could not connect to {host}")

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        answered = False
        try:
            head, rest = _read_head(client)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method.upper() == "CONNECT":
                upstream = self._connect(*_split_authority(target))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                answered = True
                if rest:
                    upstream.sendall(rest)
            else:
                parts = urlsplit(target)
                if parts.scheme.lower() != "http" or not parts.hostname:
                    raise ValueError(f"not an absolute http URL: {target!r}")
                upstream = self._connect(parts.hostname, parts.port or 80)
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                upstream.sendall(_close_after_one(head, f"{method} {path} {version}") + rest)
                # Closing after one response keeps clients from reusing this connection
                # for a request to another host.
                response, body = _read_head(upstream)
                client.sendall(_close_after_one(response) + body)
                answered = True
            self._pipe(client, upstream)
        except _Refused:
            _reply(client, b"403 Forbidden", b"Refused: private or local network address")
        except (OSError, ValueError) as exc:
            if not answered:
                _reply(client, b"502 Bad Gateway", str(exc).encode("utf-8", "replace")[:200])
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    _close(sock)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        last = time.monotonic()
        with selectors.DefaultSelector() as selector:
            selector.register(a, selectors.EVENT_READ)
            selector.register(b, selectors.EVENT_READ)
            while not (self._stop.is_set() or self.poll_cancel()):
                events = selector.select(timeout=0.25)
                if not events:
                    if time.monotonic() - last > TUNNEL_IDLE_SECONDS:
                        return
                    continue
                for key, _ in events:
                    sock = cast(socket.socket, key.fileobj)
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
                last = time.monotonic()


def _reply(sock: socket.socket, status: bytes, body: bytes) -> None:
    try:
        sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on this socket
    except OSError:
        pass
    sock.close()
