"""A real HTTP server on loopback standing in for a download host or an offline lab's mirror.

It serves bytes by file name and can fail the ways servers do: answer nothing (``stall``), or
promise a Content-Length and close the connection early (``cut``)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

#: how long a stalled answer holds at most, so a test that forgets to release it still ends
STALL_LIMIT = 60.0


class Mirror:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.stall: set[str] = set()
        self.cut: set[str] = set()
        self.requests: list[str] = []
        self.released = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = unquote(urlsplit(self.path).path).rsplit("/", 1)[-1]
                mirror.requests.append(self.path)
                if name in mirror.stall:
                    mirror.released.wait(STALL_LIMIT)
                    return
                if name not in mirror.files:
                    self.send_error(404)
                    return
                body = mirror.files[name]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in mirror.cut else body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/models"
        self.thread = threading.Thread(target=self.server.serve_forever, name="mirror", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def unreachable_url() -> str:
    """A loopback URL where nothing listens: a connection there is refused at once, as offline."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/models"
