"""A registry on 127.0.0.1 that serves one good image and lets each case replace any response.

Real sockets, so that read timeouts, dripping and endless bodies behave as they do on a network.
The good image (``hostile/app:v1``: a config and one gzip layer with ``run.sh``) answers every
request no override claims; an override is a function that writes the whole HTTP response.
Every request is recorded (method, path, headers) so a case can check what was asked and sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..registry_server import LAYER_GZIP, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from ..registry_server import digest_of as sha256
from ..tarbuild import file, gz, tar_bytes

__all__ = ["OCI_INDEX", "OCI_MANIFEST", "REPO", "HostileRegistry", "hostile_registry", "sha256"]

REPO = "hostile/app"

Handler = Callable[["_RequestHandler"], None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class HostileRegistry:
    """The server's state: blobs and manifests by path, overrides, and what was requested."""

    host: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # reference -> (body, type)
    overrides: dict[str, Handler] = field(default_factory=dict)  # path -> handler
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    # With a challenge, every request without exactly ``authorization`` gets 401 and it.
    challenge: str | None = None
    authorization: str | None = None

    # -- the good image ----------------------------------------------------------------------

    def add_blob(self, data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        self.blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    def add_manifest(self, document: dict[str, Any] | bytes, media_type: str, *tags: str) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        digest = sha256(body)
        for reference in (digest, *tags):
            self.manifests[reference] = (body, media_type)
        return digest

    def image(self, layers: list[bytes] | None = None, tag: str = "v1") -> tuple[str, dict[str, Any]]:
        """Serve an image (by default one good layer) under ``tag``; returns digest and manifest."""
        layers = layers if layers is not None else [gz(tar_bytes([file("run.sh", b"#!/bin/sh\n", 0o755)]))]
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **self.add_blob(config)},
            "layers": [{"mediaType": LAYER_GZIP, **self.add_blob(data)} for data in layers],
        }
        return self.add_manifest(manifest, OCI_MANIFEST, tag), manifest

    def path(self, kind: str, reference: str) -> str:
        return f"/v2/{REPO}/{kind}/{reference}"

    def requests_to(self, fragment: str) -> list[Seen]:
        return [s for s in self.seen if fragment in s.path]


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        state.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        # The challenge guards the registry API; a token service on the same host answers freely.
        if (
            state.challenge
            and path.startswith("/v2/")
            and self.headers.get("Authorization") != state.authorization
        ):
            self.send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": state.challenge})
            return
        override = state.overrides.get(path)
        if override is not None:
            override(self)
            return
        if path == "/v2/":
            self.send(200, b"{}")
            return
        prefix = f"/v2/{REPO}/"
        kind, _, reference = path.removeprefix(prefix).partition("/")
        if path.startswith(prefix) and kind == "manifests" and reference in state.manifests:
            body, media_type = state.manifests[reference]
            self.send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": sha256(body)})
        elif path.startswith(prefix) and kind == "blobs" and reference in state.blobs:
            self.send(200, state.blobs[reference], {"Content-Type": "application/octet-stream"})
        else:
            self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {"Content-Type": "application/json"})

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HostileRegistry


@contextmanager
def hostile_registry(*, name: str = "127.0.0.1") -> Iterator[HostileRegistry]:
    """``name``: how clients address it (``localhost`` makes a second host on the same address)."""
    server = _Server(("127.0.0.1", 0), _RequestHandler)
    server.state = HostileRegistry(host=f"{name}:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.state
    finally:
        server.state.stop.set()  # ends dripping and endless bodies
        server.shutdown()
        server.server_close()


# -- responses a case can install as overrides ---------------------------------------------------


def drip(
    body: bytes,
    *,
    every: float,
    headers: dict[str, str] | None = None,
    sent: dict[str, int] | None = None,
    key: str = "",
) -> Handler:
    """Send the headers, then one byte of ``body`` every ``every`` seconds (a slow-drip server);
    ``sent[key]`` counts the bytes the client took before it hung up."""

    def handler(request: _RequestHandler) -> None:
        request.send_response(200)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            request.send_header(key, value)
        request.end_headers()
        for index in range(len(body)):
            if request.server.state.stop.wait(every):
                return
            try:
                request.wfile.write(body[index : index + 1])
                request.wfile.flush()
            except OSError:
                return
            if sent is not None:
                sent[key] = index + 1

    return handler


def endless(*, headers: dict[str, str] | None = None) -> Handler:
    """A body that never ends: chunked, 64 KiB at a time, until the client hangs up."""

    def handler(request: _RequestHandler) -> None:
        request.send_response(200)
        request.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        chunk = b"%x\r\n%s\r\n" % (65536, b"{" * 65536)
        while not request.server.state.stop.is_set():
            try:
                request.wfile.write(chunk)
            except OSError:
                return

    return handler


def stall(*, seconds: float) -> Handler:
    """Accept the request and say nothing for ``seconds`` (a read timeout must fire first)."""

    def handler(request: _RequestHandler) -> None:
        request.server.state.stop.wait(seconds)

    return handler


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def handler(request: _RequestHandler) -> None:
        request.send(status, body, headers)

    return handler


def redirect(location: str, status: int = 307) -> Handler:
    return respond(status, b"", {"Location": location})
