"""A small OCI distribution client on httpx (edge module).

What it does, and why it is ours rather than oras-py (see docs/design.md):
- manifests are read with a size cap and hashed here; the ``Docker-Content-Digest`` header is only
  compared, never trusted;
- tags are resolved to a digest once (``resolve_tag``); everything after uses ``repo@digest``;
- token auth from ``WWW-Authenticate`` (anonymous, or Basic credentials from a Docker
  ``config.json``), tokens cached per registry and scope;
- plain HTTP only for ``insecure_registries``;
- redirects are followed by hand and credentials are dropped when the host changes (blob
  downloads are often redirected to a CDN);
- blobs stream into a ``BlobWriter`` and resume with ``Range`` after a dropped connection;
- tenacity retries connection errors, timeouts, 429 and 5xx (honouring ``Retry-After``), bounded;
  never 4xx, digest or signature failures.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from gallery.config.models import Config
from gallery.digests import sha256_digest
from gallery.errors import DigestMismatch
from gallery.net.cancel import Cancellation
from gallery.net.client import raw_chunks
from gallery.oci.models import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    Descriptor,
    ImageIndex,
    ImageManifest,
    InvalidManifest,
    parse_document,
)
from gallery.oci.references import DOCKER_HUB, OciReference
from gallery.oci.registry.auth import RegistryAuth
from gallery.oci.registry.capped import capped_body
from gallery.oci.registry.credentials import Credentials, configured_credentials
from gallery.oci.registry.endpoint import Endpoint
from gallery.oci.registry.errors import ManifestNotFound, RegistryError, RegistryUnauthorized, registry_error
from gallery.oci.registry.retry import (
    TRANSIENT_STATUS,
    RetryPolicy,
    TransientStatus,
    as_registry_errors,
    retry_after,
)
from gallery.prepare.blobcache import BlobWriter

__all__ = ["RegistryClient"]

_MAX_REDIRECTS = 5


@dataclass
class RegistryClient:
    """Reads manifests and blobs. Build with ``from_config``; inject ``client`` in tests."""

    client: httpx.Client
    insecure_registries: frozenset[str] = frozenset()
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)
    credential_source: Credentials | None = None  # auths and credential helpers (from_config)
    max_manifest_bytes: int = 4 * 1024 * 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Hosts that gave no response (after retries): skipped from then on (one round per run).
    _unreachable: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._auth = RegistryAuth(self.client, self.credential_source or Credentials(self.credentials))
        self._lock = threading.Lock()  # guards _unreachable (threads of preload --jobs share one client)

    @classmethod
    def from_config(
        cls, config: Config, client: httpx.Client, *, retry: RetryPolicy | None = None
    ) -> RegistryClient:
        source = configured_credentials(config)
        return cls(client, frozenset(config.insecure_registries), source.static, source,
                   config.limits.max_manifest_bytes, retry or RetryPolicy())  # fmt: skip

    # -- endpoints --------------------------------------------------------------------------

    def endpoint(self, registry_or_mirror: str) -> Endpoint:
        host, _, prefix = registry_or_mirror.partition("/")
        api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
        return Endpoint(api_host, prefix, insecure=host in self.insecure_registries)

    # -- manifests --------------------------------------------------------------------------

    def resolve_tag(self, endpoint: Endpoint, ref: OciReference) -> str:
        """The digest a tag points at now (HEAD; GET when HEAD gives no digest).

        Raises:
            ManifestNotFound, RegistryError, DigestMismatch.
        """
        if ref.tag is None:
            raise ManifestNotFound(f"{ref} has neither a tag nor a digest to resolve")
        repo = endpoint.repository(ref)
        with self._open(endpoint, repo, "HEAD", f"manifests/{ref.tag}", accept=MANIFEST_ACCEPT) as response:
            header = response.headers.get("Docker-Content-Digest")
        if header and re.fullmatch(r"sha256:[0-9a-f]{64}", header):
            return str(header)
        data, digest_header = self._read_manifest(endpoint, repo, ref.tag)
        digest = sha256_digest(data)
        if digest_header and digest_header != digest:
            raise DigestMismatch(
                f"{endpoint}/{repo}:{ref.tag}: manifest bytes hash to {digest}, "
                f"the registry says {digest_header}"
            )
        return digest

    def get_manifest(self, endpoint: Endpoint, ref: OciReference, digest: str) -> ImageManifest | ImageIndex:
        """Fetch a manifest or index by digest and check its bytes hash to that digest.

        Raises:
            ManifestNotFound, RegistryError, DigestMismatch, InvalidManifest.
        """
        data = self.get_manifest_bytes(endpoint, ref, digest)
        return parse_document(data, where=f"{endpoint}/{endpoint.repository(ref)}@{digest}")

    def get_manifest_bytes(self, endpoint: Endpoint, ref: OciReference, digest: str) -> bytes:
        """The exact bytes of a manifest or index, checked against ``digest`` (capped).

        Raises:
            ManifestNotFound, RegistryError, DigestMismatch.
        """
        repo = endpoint.repository(ref)
        data, _ = self._read_manifest(endpoint, repo, digest)
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatch(f"{endpoint}/{repo}@{digest}: the manifest served hashes to {actual}")
        return data

    # -- referrers (signature discovery) ----------------------------------------------------

    def referrers(
        self, endpoint: Endpoint, ref: OciReference, digest: str, *, limit: int
    ) -> list[Descriptor]:
        """Descriptors of the manifests that refer to ``digest``: the OCI 1.1 referrers API
        (following ``Link`` paging), else the tag-schema fallback ``sha256-<hex>``.

        Raises:
            RegistryError: the registry cannot be reached.
        """
        repo = endpoint.repository(ref)
        found: list[Descriptor] = []
        path: str | None = f"referrers/{digest}"
        pages = 0
        while path is not None and len(found) < limit and pages < 16:
            pages += 1
            try:
                data, headers = self._read_document(endpoint, repo, path, accept=OCI_INDEX)
            except (ManifestNotFound, RegistryUnauthorized):
                return found if pages > 1 else self._fallback_referrers(endpoint, ref, digest, limit=limit)
            except RegistryError as exc:
                if exc.status in (400, 405, 406) and pages == 1:
                    return self._fallback_referrers(endpoint, ref, digest, limit=limit)
                raise
            content_type = headers.get("Content-Type", "").split(";")[0].strip()
            try:
                document = parse_document(data, where=f"{endpoint}/{repo}/{path}")
            except InvalidManifest:
                document = None
            if content_type not in (OCI_INDEX, "") or not isinstance(document, ImageIndex):
                if pages == 1:
                    return self._fallback_referrers(endpoint, ref, digest, limit=limit)
                break
            found.extend(document.manifests)
            path = _next_link(headers.get("Link"), repo)
        return found[:limit]

    def _fallback_referrers(
        self, endpoint: Endpoint, ref: OciReference, digest: str, *, limit: int
    ) -> list[Descriptor]:
        repo = endpoint.repository(ref)
        tag = digest.replace(":", "-")
        try:
            data, _ = self._read_document(endpoint, repo, f"manifests/{tag}", accept=MANIFEST_ACCEPT)
        except ManifestNotFound:
            return []
        document = parse_document(data, where=f"{endpoint}/{repo}:{tag}")
        return list(document.manifests[:limit]) if isinstance(document, ImageIndex) else []

    def has_tag(self, endpoint: Endpoint, ref: OciReference, tag: str) -> bool:
        try:
            with self._open(
                endpoint, endpoint.repository(ref), "HEAD", f"manifests/{tag}", accept=MANIFEST_ACCEPT
            ):
                return True
        except ManifestNotFound:
            return False

    def read_blob(
        self, endpoint: Endpoint, ref: OciReference, descriptor: Descriptor, *, max_bytes: int
    ) -> bytes:
        """A small blob (a bundle) read whole, capped, and checked against its digest.

        Raises:
            RegistryError (over the cap, unreachable), DigestMismatch.
        """
        repo = endpoint.repository(ref)
        if descriptor.size > max_bytes:
            raise RegistryError(
                f"{endpoint}/{repo}@{descriptor.digest}: {descriptor.size} bytes is over the limit"
            )
        data, _ = self._read_document(endpoint, repo, f"blobs/{descriptor.digest}", limit=max_bytes)
        actual = sha256_digest(data)
        if actual != descriptor.digest:
            raise DigestMismatch(f"{endpoint}/{repo}@{descriptor.digest}: the blob served hashes to {actual}")
        return data

    def _read_manifest(self, endpoint: Endpoint, repo: str, reference: str) -> tuple[bytes, str | None]:
        data, headers = self._read_document(endpoint, repo, f"manifests/{reference}", accept=MANIFEST_ACCEPT)
        return data, headers.get("Docker-Content-Digest")

    def _read_document(
        self, endpoint: Endpoint, repo: str, path: str, *, accept: str | None = None, limit: int | None = None
    ) -> tuple[bytes, httpx.Headers]:
        cap = limit or self.max_manifest_bytes
        setting = "limits.max_bundle_bytes" if limit else "limits.max_manifest_bytes"
        reference = path.rsplit("/", 1)[-1]
        # A connection dropped while the body is read is retried like one dropped before it, and
        # what outlives the retries is a RegistryError (the next endpoint or candidate is tried).
        with as_registry_errors(f"{endpoint}/{repo}:{reference}", self.retry.attempts):
            for attempt in self.retry.retrying():
                with attempt, self._open(endpoint, repo, "GET", path, accept=accept) as response:
                    where = f"{endpoint}/{repo}:{reference}"
                    return capped_body(response, cap, where=where, setting=setting), response.headers
        raise AssertionError("unreachable: the retry loop returns or raises")

    # -- blobs ------------------------------------------------------------------------------

    def fetch_blob(
        self,
        endpoint: Endpoint,
        ref: OciReference,
        descriptor: Descriptor,
        writer: BlobWriter,
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        """Stream a blob into ``writer``, resuming after dropped connections; then commit it.

        Raises:
            RegistryError, DigestMismatch (nothing is cached then), Cancelled.
        """
        repo = endpoint.repository(ref)
        url = f"{endpoint}/{repo}@{descriptor.digest}"
        with as_registry_errors(url, self.retry.attempts):
            self._stream_blob(endpoint, repo, descriptor, writer, on_bytes, cancel or Cancellation())
        writer.commit()

    def _stream_blob(
        self,
        endpoint: Endpoint,
        repo: str,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None,
        cancel: Cancellation,
    ) -> None:
        for attempt in self.retry.retrying(sleep=cancel.sleep):
            with attempt:
                cancel.check()
                if writer.complete:  # resumed with every byte already there: nothing to ask for
                    return
                headers = {"Range": f"bytes={writer.offset}-"} if writer.offset else {}
                opened = self._open(endpoint, repo, "GET", f"blobs/{descriptor.digest}", headers=headers)
                with opened as response, cancel.watching(response):  # ``cancel``: from another thread
                    if response.status_code == 206:
                        start = _content_range_start(response.headers.get("Content-Range", ""))
                        if start != writer.offset:
                            writer.restart()
                            raise httpx.RemoteProtocolError("unexpected Content-Range; restarting the blob")
                    elif writer.offset:
                        writer.restart()  # the server ignored Range and sent the whole blob
                    for chunk in raw_chunks(response):  # unbuffered: bytes before a drop are kept
                        writer.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _open(
        self,
        endpoint: Endpoint,
        repo: str,
        method: str,
        path: str,
        *,
        accept: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """Send a request (auth, redirects, retries); yield a streaming 2xx response."""
        url = f"{endpoint.scheme}://{endpoint.host}/v2/{repo}/{path}"
        request_headers = dict(headers or {})
        if accept:
            request_headers["Accept"] = accept
        scope = f"repository:{repo}:pull"
        with self._lock:
            skipped = endpoint.host in self._unreachable
        if skipped:
            raise RegistryError(f"{url}: {endpoint.host} did not respond earlier in this run; skipped")
        response: httpx.Response | None = None
        try:
            with as_registry_errors(url, self.retry.attempts):
                for attempt in self.retry.retrying():
                    with attempt:
                        response = self._send(endpoint, url, method, request_headers, scope)
                        if response.status_code in TRANSIENT_STATUS:
                            wait = retry_after(response.headers.get("Retry-After"))
                            response.close()
                            raise TransientStatus(response.status_code, wait)
        except RegistryError as exc:
            if isinstance(exc.__cause__, httpx.TransportError):  # no response at all, every attempt
                with self._lock:
                    self._unreachable.add(endpoint.host)
            raise
        if response is None:  # the retry loop either sets it or raises
            raise RegistryError(f"{url}: no response")
        try:
            if response.status_code >= 400:
                raise registry_error(endpoint, repo, path, response)
            yield response
        finally:
            response.close()

    def _send(
        self, endpoint: Endpoint, url: str, method: str, headers: dict[str, str], scope: str
    ) -> httpx.Response:
        origin = urlsplit(url).netloc
        authorization = self._auth.cached(endpoint.host, scope)
        answered = False  # a challenge is answered once per request: a fresh token, or give up
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers)
            if authorization and urlsplit(url).netloc == origin:
                sent["Authorization"] = authorization
            response = self.client.send(self.client.build_request(method, url, headers=sent), stream=True)
            if response.status_code == 401 and urlsplit(url).netloc == origin and not answered:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()  # unread: a hostile 401 body is never read
                authorization, answered = self._auth.answer(endpoint, challenge, scope), True
                if authorization is None:
                    raise RegistryUnauthorized(f"{url}: the registry requires credentials we do not have")
                continue
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                response.close()
                url = _redirect_target(url, response, endpoint)
                method = "GET" if response.status_code == 303 else method
                continue
            return response
        raise RegistryError(f"{url}: more than {_MAX_REDIRECTS} redirects")


def _redirect_target(url: str, response: httpx.Response, endpoint: Endpoint) -> str:
    """Where a redirect leads, if we may follow it (never from HTTPS down to plain HTTP)."""
    target = urljoin(url, response.headers["Location"])
    if urlsplit(target).scheme not in ("https", "http"):
        raise RegistryError(f"{url}: redirect to unsupported location {target!r}")
    if urlsplit(target).scheme == "http" and not endpoint.insecure:
        raise RegistryError(f"{url}: refusing a redirect from HTTPS to plain HTTP ({target})")
    return target


def _next_link(header: str | None, repo: str) -> str | None:
    """The path of the next referrers page from a ``Link: <...>; rel="next"`` header (same repo only)."""
    if not header:
        return None
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    if match is None:
        return None
    target = urlsplit(match.group(1))
    prefix = f"/v2/{repo}/"
    if target.netloc or not target.path.startswith(prefix):
        return None
    return target.path[len(prefix) :] + (f"?{target.query}" if target.query else "")


def _content_range_start(value: str) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", value.strip())
    return int(match.group(1)) if match else None
