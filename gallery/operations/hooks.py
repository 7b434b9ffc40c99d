"""``on_change``: a command run after a batch changed what is installed (edge module).

LocalAI notices new backends only at start-up or after its own installs; the hook is how an
operator tells it (restart the service, or call LocalAI's API). The command is an argv list run
without a shell, with a fixed, minimal environment (nothing of ours is passed through, since the
library never reads its own): ``GALLERY_CHANGED`` names the changed backends, space-separated,
and ``GALLERY_OPERATIONS`` their statuses. Its outcome goes into the batch's result; a failing
hook is reported, and does not undo or fail the change that already happened.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from typing import Any

from gallery.results import BatchResult, HookOutcome

__all__ = ["CHANGING_STATUSES", "run_on_change"]

CHANGING_STATUSES = frozenset({"installed", "upgraded", "rolled-back", "repaired", "uninstalled", "adopted"})
_OUTPUT_TAIL = 4096
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_on_change(batch: BatchResult, argv: tuple[str, ...], *, timeout: float) -> BatchResult:
    """``batch`` with the hook's outcome, after running it if anything changed (else unchanged)."""
    changed = [r for r in batch.results if r.error is None and r.status in CHANGING_STATUSES]
    if not argv or not changed:
        return batch
    env = {
        "PATH": _PATH,
        "GALLERY_CHANGED": " ".join(r.name or r.requested for r in changed),
        "GALLERY_OPERATIONS": " ".join(r.status for r in changed),
    }
    start = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - an argv from the operator's config, never a shell
            list(argv), env=env, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
        outcome = HookOutcome(argv, done.returncode, time.monotonic() - start,
                              _tail(done.stdout + done.stderr))  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        output = _tail((exc.stdout or b"") + (exc.stderr or b""))
        outcome = HookOutcome(argv, None, time.monotonic() - start, output,
                              error=f"timed out after {timeout:g} s and was killed")  # fmt: skip
    except OSError as exc:
        outcome = HookOutcome(argv, None, time.monotonic() - start, "", error=exc.strerror or str(exc))
    return replace(batch, hook=outcome)


def _tail(output: Any) -> str:
    data = bytes(output)[-_OUTPUT_TAIL:]
    return data.decode("utf-8", errors="replace")
