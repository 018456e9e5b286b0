"""A TCP proxy on loopback that can cut a link or turn it into a black hole, for fault tests.

A client connects to the proxy's port instead of the broker's. Modes:

* ``forward`` — bytes pass both ways;
* ``cut`` — every open link is closed on both sides and new connections are closed at once
  (a pulled cable behind a router that answers with resets);
* ``blackhole`` — links stay open, but nothing gets through in either direction and closes
  are not passed on; new connections are accepted and swallowed too (a silently dead route:
  only a keepalive can notice).

A link that was black-holed stays dead after ``forward()``, as both of its ends have given up
on it by then; new connections are forwarded again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket | None
    dead: bool = False
    closed: set[socket.socket] = field(default_factory=set)


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.mode = "forward"
        self.connections = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._spawn(self._accept_loop)

    def forward(self) -> None:
        self.mode = "forward"

    def cut(self) -> None:
        with self._lock:
            self.mode = "cut"
            links, self._links = self._links, []
        for link in links:
            self._close(link)

    def blackhole(self) -> None:
        with self._lock:
            self.mode = "blackhole"
            for link in self._links:
                link.dead = True

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            self._close(link)
        for thread in self._threads:
            thread.join(timeout=2)

    # --- internals ---------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            mode = self.mode
            if mode == "cut":
                client.close()
                continue
            upstream = None
            if mode == "forward":
                try:
                    upstream = socket.create_connection(self.target, timeout=2)
                except OSError:
                    client.close()
                    continue
            link = _Link(client, upstream, dead=mode == "blackhole")
            with self._lock:
                self._links.append(link)
            self._spawn(self._pump, link, client, upstream)
            if upstream is not None:
                self._spawn(self._pump, link, upstream, client)

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket | None) -> None:
        while not self._stop.is_set() and source not in link.closed:
            try:
                ready, _, _ = select.select([source], [], [], 0.1)
                if not ready:
                    continue
                data = source.recv(65536)
            except (OSError, ValueError):
                data = b""
            if not data:
                if link.dead:
                    _quiet_close(source)  # a black hole passes no close on
                    link.closed.add(source)
                else:
                    self._close(link)
                return
            if link.dead or sink is None:
                continue  # swallowed
            try:
                sink.sendall(data)
            except OSError:
                self._close(link)
                return

    def _close(self, link: _Link) -> None:
        for sock in (link.client, link.upstream):
            if sock is not None:
                link.closed.add(sock)
                _quiet_close(sock)


def _quiet_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
