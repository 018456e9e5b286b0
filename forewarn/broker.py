"""An MQTT broker embedded in the process, so the demo needs nothing installed.

amqtt is a pure-Python asyncio broker: it speaks MQTT 3.1.1, which is all the demo uses, and
it is installed with forewarn itself. Its event loop runs in a daemon thread. It is not meant
for production (no persistence, slow shutdown): use mosquitto or another real broker there.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something listens on ``host:port`` (a broker or server just started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Ask a child process (a broker or server started for a run) to stop; kill it if it
    has not within ``timeout_s``, so no run leaves one behind."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


class EmbeddedBroker:
    """Starts amqtt on ``host:port`` (a free port when 0) in its own thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="forewarn-broker", daemon=True
        )
        self._broker: Any = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def start(self, timeout_s: float = 15.0) -> None:
        # amqtt logs every connection at INFO; keep the demo's output about machines.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._thread.start()

        async def start() -> None:
            from amqtt.broker import Broker

            self._broker = Broker(self._config())
            await self._broker.start()

        future: Future[None] = asyncio.run_coroutine_threadsafe(start(), self._loop)
        future.result(timeout=timeout_s)
        logger.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout=timeout_s)
            except Exception as error:  # shutting down: report, never hang the demo
                logger.warning("embedded broker shutdown: %s", error)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout_s)
