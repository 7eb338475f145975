"""A loopback TCP listener that counts connections: proof that nothing was sent to it."""

from __future__ import annotations

import socket
import threading

__all__ = ["CountingListener"]


class CountingListener:
    """Accepts and closes connections on 127.0.0.1, counting them, until `close`."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.accepted = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()
