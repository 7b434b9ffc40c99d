"""Registry credentials: a Docker ``config.json``'s ``auths``, and credential helpers (edge module).

Docker's protocol (docker/docker-credential-helpers): ``docker-credential-NAME get`` reads the
registry host on stdin and prints ``{"ServerURL", "Username", "Secret"}``. Helpers come from the
config's ``credential_helpers`` (host -> helper) first, then the Docker config's ``credHelpers``
(host -> helper) and ``credsStore`` (every host). A helper name is looked up in fixed
directories (PATH is never read) unless it is an absolute path; it runs with only the
environment the config gives it (``credential_helper_env``): ``pass`` or ``ecr-login`` need e.g.
``HOME``, which the library will not take from its own environment. A helper is asked at most
once per host and run (a failure is not remembered: the next run asks again).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gallery.config.models import Config
from gallery.errors import OperationalError
from gallery.oci.references import DOCKER_HUB
from gallery.oci.registry.endpoint import load_docker_config

__all__ = ["CredentialHelpers", "Credentials", "configured_credentials", "helper_program"]

_HELPER_DIRS = ("/usr/local/bin", "/usr/bin", "/bin")
_MAX_HELPER_OUTPUT = 64 * 1024
_HELPER_TIMEOUT = 30.0
# Docker's own name for Docker Hub in config.json keys and helper requests.
_DOCKER_HUB_SERVER = "https://index.docker.io/v1/"


def helper_program(helper: str) -> Path:
    """The program of a helper name (``pass`` -> ``/usr/bin/docker-credential-pass``) or path.

    Raises:
        OperationalError: no such program in the fixed directories.
    """
    if helper.startswith("/"):
        return Path(helper)
    for directory in _HELPER_DIRS:
        program = Path(directory) / f"docker-credential-{helper}"
        if program.is_file():
            return program
    raise OperationalError(
        f"credential helper {helper!r}: no docker-credential-{helper} in {', '.join(_HELPER_DIRS)}",
        hint="give its absolute path in credential_helpers",
    )


@dataclass
class CredentialHelpers:
    """Which helper serves which registry, and running it."""

    per_host: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None  # credsStore
    env: Mapping[str, str] = field(default_factory=dict)

    def helper_for(self, registry: str) -> str | None:
        return self.per_host.get(registry) or self.default

    def get(self, registry: str) -> tuple[str, str] | None:
        """``(username, secret)`` from the registry's helper, or ``None`` when it has none.

        Raises:
            OperationalError: the helper failed (other than "credentials not found").
        """
        helper = self.helper_for(registry)
        if helper is None:
            return None
        program = helper_program(helper)
        server = _DOCKER_HUB_SERVER if registry == DOCKER_HUB else registry
        try:
            done = subprocess.run(  # noqa: S603 - a configured program, fixed argument, no shell
                [str(program), "get"], input=server.encode(), capture_output=True,
                timeout=_HELPER_TIMEOUT, check=False, env=dict(self.env),
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise OperationalError(f"credential helper {program} for {registry}: {exc}") from exc
        output = done.stdout[:_MAX_HELPER_OUTPUT]
        if done.returncode != 0:
            message = (output or done.stderr[:_MAX_HELPER_OUTPUT]).decode("utf-8", "replace").strip()
            if "credentials not found" in message.lower():
                return None
            raise OperationalError(
                f"credential helper {program} for {registry} failed "
                f"(exit {done.returncode}): {message[:200]}",
                hint="run it by hand: echo HOST | docker-credential-NAME get",
            )
        return _parse(output, program, registry)


def _parse(output: bytes, program: Path, registry: str) -> tuple[str, str] | None:
    try:
        document: Any = json.loads(output)
        user, secret = document["Username"], document["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OperationalError(f"credential helper {program} for {registry} printed no credentials") from exc
    if not isinstance(user, str) or not isinstance(secret, str):
        raise OperationalError(f"credential helper {program} for {registry} printed no credentials")
    if user == "<token>":
        # An identity token is an OAuth2 refresh token, exchanged at the token service: not supported.
        raise OperationalError(
            f"credential helper {program} for {registry} gave an identity token, which gallery cannot use",
            hint="give a username and password or access token (docker_config auths) for this registry",
        )
    return (user, secret) if user else None


def configured_credentials(config: Config) -> Credentials:
    """The config's credentials: ``docker_config``'s ``auths``, its ``credHelpers`` and
    ``credsStore``, and ``credential_helpers`` (which win), run with ``credential_helper_env``.

    Raises:
        OperationalError: ``docker_config`` cannot be read.
    """
    docker = load_docker_config(config.docker_config) if config.docker_config else None
    helpers = CredentialHelpers(
        per_host={**(docker.cred_helpers if docker else {}), **config.credential_helpers},
        default=docker.creds_store if docker else None,
        env=config.credential_helper_env,
    )
    return Credentials(docker.auths if docker else {}, helpers)


class Credentials:
    """Per registry: static ``auths`` first, else its helper (asked once per host per run)."""

    def __init__(
        self, static: Mapping[str, tuple[str, str]], helpers: CredentialHelpers | None = None
    ) -> None:
        self.static = dict(static)
        self._helpers = helpers
        self._asked: dict[str, tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    def get(self, registry: str) -> tuple[str, str] | None:
        """Raises: OperationalError (a helper failed; nothing is remembered)."""
        if registry in self.static:
            return self.static[registry]
        if self._helpers is None or self._helpers.helper_for(registry) is None:
            return None
        with self._lock:  # one helper run per host, also when preload's threads ask at once
            if registry not in self._asked:
                self._asked[registry] = self._helpers.get(registry)
            return self._asked[registry]
