"""A forward HTTP proxy on 127.0.0.1 for tests: absolute-URI requests for http:// targets and
CONNECT tunnels for https://, recording what it was asked (and the Proxy-Authorization seen)."""

from __future__ import annotations

import http.client
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit


@dataclass
class ProxyLog:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, target)
    proxy_auth: list[str | None] = field(default_factory=list)


@contextmanager
def forward_proxy() -> Iterator[tuple[str, ProxyLog]]:
    log = ProxyLog()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _record(self) -> None:
            with lock:
                log.requests.append((self.command, self.path))
                log.proxy_auth.append(self.headers.get("Proxy-Authorization"))

        def do_CONNECT(self) -> None:
            self._record()
            host, _, port = self.path.partition(":")
            if host not in ("127.0.0.1", "localhost"):
                self.send_error(403)
                return
            upstream = socket.create_connection((host, int(port)), timeout=10)
            self.send_response(200, "Connection established")
            self.end_headers()
            sockets = [self.connection, upstream]
            try:
                while True:
                    ready, _, _ = select.select(sockets, [], [], 10)
                    if not ready:
                        return
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        (upstream if sock is self.connection else self.connection).sendall(data)
            finally:
                upstream.close()

        def _forward(self) -> None:
            self._record()
            target = urlsplit(self.path)
            if target.hostname not in ("127.0.0.1", "localhost"):
                self.send_error(403)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("proxy-authorization", "proxy-connection")
            }
            connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
            path = target.path + (f"?{target.query}" if target.query else "")
            connection.request(self.command, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            connection.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _forward

    class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
