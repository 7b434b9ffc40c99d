"""A gallery's signature policy: who must have signed, and since when (pure model).

The policy is validated once, when the config is loaded: exactly one of ``issuer``/``issuer_regex``
and one of ``identity``/``identity_regex``; regexes compile and are always matched in full (an
operator who writes ``github\\.com/org/`` does not get every repository whose URL contains it).
The verification stage (signatures) uses ``matches_issuer`` and ``matches_identity``.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["VerificationPolicy"]

_MAX_PATTERN_LENGTH = 1024


class VerificationPolicy(BaseModel):
    """``verification`` (and ``index_verification``) block of a gallery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str | None = Field(
        None, description="The OIDC issuer of the signing certificate, exactly (or give `issuer_regex`)."
    )
    issuer_regex: str | None = Field(None, description="A regex the whole issuer must match.")
    identity: str | None = Field(
        None, description="The certificate identity (URI or e-mail SAN), exactly (or give `identity_regex`)."
    )
    identity_regex: str | None = Field(None, description="A regex the whole identity must match.")
    not_before: datetime | None = Field(
        None,
        description=(
            "Signatures whose signing time (the log's, or a timestamp authority's) is before "
            "this instant (with time zone) are refused: revokes a signing window."
        ),
    )

    @field_validator("issuer_regex", "identity_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > _MAX_PATTERN_LENGTH:
            raise ValueError(f"regex is longer than {_MAX_PATTERN_LENGTH} characters")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"regex {value!r} does not compile: {exc}") from exc
        return value

    @field_validator("issuer", "identity")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("not_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("not_before needs a time zone, e.g. 2026-05-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _complete(self) -> VerificationPolicy:
        if (self.issuer is None) == (self.issuer_regex is None):
            raise ValueError("a policy needs exactly one of 'issuer' or 'issuer_regex'")
        if (self.identity is None) == (self.identity_regex is None):
            raise ValueError("a policy needs exactly one of 'identity' or 'identity_regex'")
        return self

    @cached_property
    def _issuer_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.issuer_regex) if self.issuer_regex is not None else None

    @cached_property
    def _identity_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.identity_regex) if self.identity_regex is not None else None

    def matches_issuer(self, issuer: str) -> bool:
        if self._issuer_pattern is not None:
            return self._issuer_pattern.fullmatch(issuer) is not None
        return issuer == self.issuer

    def matches_identity(self, identity: str) -> bool:
        if self._identity_pattern is not None:
            return self._identity_pattern.fullmatch(identity) is not None
        return identity == self.identity

    def describe(self) -> dict[str, Any]:
        """The policy as an operator wrote it, for ``show``/``doctor`` output."""
        return self.model_dump(mode="json", exclude_none=True)
