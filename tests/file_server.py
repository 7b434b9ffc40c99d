"""A plain HTTP server on 127.0.0.1 serving files from a dict (indexes, tarballs, signatures).

``files[path] = bytes`` publishes, ``del files[path]`` withdraws (404), ``redirects[path] = location``
answers 302, ``cut_after[path] = n`` hangs up after n bytes of the body, ``unavailable[path] = n``
answers 503 n times first; ``requests`` records every
path asked for, so a test can prove a refused candidate was never contacted.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class FileServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (302)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> extra response headers
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up
    unavailable: dict[str, int] = field(default_factory=dict)  # path -> how many more 503s to answer
    requests: list[str] = field(default_factory=list)

    def publish(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return f"{self.url}{path}"


@contextmanager
def serving() -> Iterator[FileServer]:
    state = FileServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if state.unavailable.get(self.path, 0) > 0:
                state.unavailable[self.path] -= 1
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            for key, value in state.headers.get(self.path, {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            cut = state.cut_after.get(self.path)
            self.wfile.write(data if cut is None else data[:cut])
            if cut is not None:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
