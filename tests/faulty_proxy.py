"""An HTTP proxy in front of the real registry that injects faults (bounded, loopback only)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Faults:
    unavailable: int = 0  # answer this many requests with 503 first
    drop_blob_after: int | None = None  # cut the first blob response longer than this after that many bytes
    slow_blobs: float = 0.0  # seconds to sleep before each 16 KiB chunk of a blob response
    stopped: bool = False  # a dead mirror: cut responses in flight, answer nothing more
    ignore_range: bool = False  # a server that answers every Range request with the whole blob
    blob_bytes_sent: int = 0  # body bytes of blob responses written to clients (all of them)
    stall_blobs_after: int | None = None  # a stalled link: a blob response stops sending after this
    released: threading.Event = field(default_factory=threading.Event)  # ...until this is set
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)


def _take_drop(faults: Faults, lock: threading.Lock) -> bool:
    """The one drop, for the first response that reaches it (a shorter blob never does)."""
    with lock:
        if faults.drop_blob_after is None:
            return False
        faults.drop_blob_after = None
        return True


@contextmanager
def faulty_proxy(upstream: str, faults: Faults) -> Iterator[str]:
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            if faults.stopped:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            with lock:
                faults.seen.append((self.command, self.path, self.headers.get("Range")))
                if faults.unavailable > 0:
                    faults.unavailable -= 1
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                drop = faults.drop_blob_after if "/blobs/" in self.path else None
            dropped = ("host", "connection", "range") if faults.ignore_range else ("host", "connection")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with (
                httpx.Client(trust_env=False, timeout=30) as client,
                client.stream(self.command, upstream + self.path, headers=headers, content=body) as response,
            ):
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(key, value)
                self.end_headers()
                sent = 0
                slow = faults.slow_blobs if "/blobs/" in self.path else 0.0
                stall = faults.stall_blobs_after if "/blobs/" in self.path else None
                for chunk in response.iter_raw(16384):
                    if slow:
                        time.sleep(slow)
                    if stall is not None and sent >= stall:
                        faults.released.wait(120)
                    if faults.stopped:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if drop is not None and sent + len(chunk) > drop and _take_drop(faults, lock):
                        self.wfile.write(chunk[: drop - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if "/blobs/" in self.path:
                        with lock:
                            faults.blob_bytes_sent += len(chunk)

        do_GET = do_HEAD = do_PUT = do_POST = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
