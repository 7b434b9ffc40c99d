"""Retries at the HTTP edge only: connection errors, timeouts, 429 and 5xx (honouring
``Retry-After``), bounded, with jittered backoff; never 4xx, digest or signature failures.
Registries, tarball servers and index servers use the same policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import tenacity

__all__ = ["TRANSIENT_STATUS", "RetryPolicy", "TransientStatus", "retry_after"]

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class TransientStatus(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 20.0

    def retrying(self, *, sleep: Callable[[float], None] | None = None) -> tenacity.Retrying:
        """``sleep``: how to wait between attempts (a cancellable wait; default time.sleep)."""

        def wait(state: tenacity.RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            if isinstance(error, TransientStatus) and error.retry_after is not None:
                return min(error.retry_after, self.max_wait)
            backoff = tenacity.wait_exponential_jitter(multiplier=self.initial_wait, max=self.max_wait)
            return float(backoff(state)) if self.initial_wait > 0 else 0.0

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type((httpx.TransportError, TransientStatus)),
            reraise=True,
            sleep=sleep if sleep is not None else tenacity.nap.sleep,
        )


def retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
