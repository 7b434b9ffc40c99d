"""Registry authorization: anonymous, Basic credentials from a Docker ``config.json``, or Bearer
tokens from the realm a ``WWW-Authenticate`` challenge names, cached per registry and scope.

A token the registry refuses (it expired) is dropped and fetched again once. Not an
``httpx.Auth``: httpx reads a challenged response's body whole before the flow continues
(``Client._send_handling_auth``), and a hostile registry's 401 body must not be read uncapped; the
client's send loop asks this object instead and closes the 401 unread.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import urlencode, urlsplit

import httpx

from gallery.oci.references import DOCKER_HUB
from gallery.oci.registry.capped import capped_body
from gallery.oci.registry.credentials import Credentials
from gallery.oci.registry.endpoint import Endpoint
from gallery.oci.registry.errors import RegistryError, RegistryUnauthorized

__all__ = ["RegistryAuth"]

_MAX_TOKEN_BYTES = 64 * 1024
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class RegistryAuth:
    """The ``Authorization`` to send per (API host, scope); safe to share between threads."""

    def __init__(self, client: httpx.Client, credentials: Credentials) -> None:
        self._client = client
        self._credentials = credentials
        self._cached: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def cached(self, host: str, scope: str) -> str | None:
        with self._lock:
            return self._cached.get((host, scope))

    def answer(self, endpoint: Endpoint, challenge: str, scope: str) -> str | None:
        """Answer a 401's challenge (``None``: we have no credentials it accepts); whatever was
        cached for this host and scope was refused, so it is replaced.

        Raises:
            RegistryError, RegistryUnauthorized: an unusable challenge or token service.
        """
        with self._lock:
            self._cached.pop((endpoint.host, scope), None)
        registry = DOCKER_HUB if endpoint.host == "registry-1.docker.io" else endpoint.host
        credentials = self._credentials.get(registry)  # may run a credential helper
        authorization = _answer_challenge(self._client, endpoint, challenge, scope, credentials)
        if authorization is not None:
            with self._lock:
                self._cached[(endpoint.host, scope)] = authorization
        return authorization


def _answer_challenge(
    client: httpx.Client, endpoint: Endpoint, challenge: str, scope: str, credentials: tuple[str, str] | None
) -> str | None:
    """The ``Authorization`` value a ``WWW-Authenticate`` challenge asks for (``None``: we have
    no credentials it accepts). Bearer tokens come only from the realm the registry named, over
    HTTPS unless the registry is insecure and serves them itself; the token body is capped."""
    scheme, _, params_text = challenge.partition(" ")
    if scheme.lower() == "basic":
        if credentials is None:
            return None
        encoded = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        return f"Basic {encoded}"
    if scheme.lower() != "bearer":
        return None
    params = dict(_CHALLENGE_RE.findall(params_text))
    realm = params.get("realm")
    if not realm or urlsplit(realm).scheme not in ("https", "http"):
        raise RegistryError(f"{endpoint}: unusable auth challenge {challenge!r}")
    if urlsplit(realm).scheme == "http" and not endpoint.insecure:
        raise RegistryError(f"{endpoint}: refusing to fetch a token over plain HTTP from {realm}")
    if urlsplit(realm).scheme == "http" and urlsplit(realm).netloc != endpoint.host:
        # An insecure registry may serve its own tokens over plain HTTP; sending credentials
        # in clear text to whichever other host its challenge names is another matter.
        raise RegistryError(
            f"{endpoint}: refusing to fetch a token over plain HTTP from another host ({realm})",
            hint="serve the token service over HTTPS, or on the registry's own host",
        )
    query = {"scope": params.get("scope", scope)}
    if "service" in params:
        query["service"] = params["service"]
    auth = httpx.BasicAuth(*credentials) if credentials else None
    # Credentials go only to the realm the registry named, never through redirects.
    # Read as sent (identity asked for): a capped read of bytes that arrive, not of a decoded body.
    headers = {"Accept-Encoding": "identity"}
    with client.stream(
        "GET", f"{realm}?{urlencode(query)}", auth=auth, headers=headers, follow_redirects=False
    ) as response:
        body = b""
        if response.status_code == 200:
            body = capped_body(response, _MAX_TOKEN_BYTES, where=f"{endpoint}: token from {realm}",
                                setting="the token size limit")  # fmt: skip
    if response.status_code != 200:
        raise RegistryUnauthorized(
            f"{endpoint}: token request to {realm} failed with HTTP {response.status_code}"
        )
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryUnauthorized(f"{endpoint}: the token service at {realm} returned no token")
    return f"Bearer {token}"
