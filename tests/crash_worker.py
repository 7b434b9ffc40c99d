"""Run one gallery operation in a child process that kills itself (SIGKILL) at a chosen swap step.

    python crash_worker.py CONFIG OP NAME KILL_AT

OP: install | upgrade | rollback | uninstall. KILL_AT: a step name from gallery.swap.STEPS, or
``none``. Every step reached is printed (flushed) before the kill, so the parent knows which
steps an operation passes through. ``ready`` is printed once imports are done, for kills at
random times. The hook is a constructor parameter of the Installer, not an environment variable.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.verify.signatures import SigstoreVerifier


def main() -> int:
    config_path, op, name, kill_at = sys.argv[1:5]

    def step(reached: str) -> None:
        sys.stdout.write(f"step {reached}\n")
        sys.stdout.flush()
        if reached == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    config = load_config(Path(config_path))
    with httpx.Client(trust_env=False) as client:
        installer = Installer(config, client=client, verifier=SigstoreVerifier(),
                              detector=lambda: HostFacts("linux", "amd64"), step=step)  # fmt: skip
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        if op == "install":
            result = installer.install_one(name)
        elif op == "upgrade":
            result = installer.upgrade_one(name)
        elif op == "rollback":
            result = installer.rollback(name)
        else:
            result = installer.uninstall_one(name)
    sys.stdout.write(f"result {result.status} {result.error}\n")
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
