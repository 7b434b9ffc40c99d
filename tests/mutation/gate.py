"""Mutation check of the trust gate: delete one condition at a time and see a test fail.

    .venv/bin/python -m tests.mutation.gate [--only NAME] [--report FILE]

Every ``if``/``elif`` test in the gate's functions is replaced by ``False`` (the check is deleted),
every operand of an ``and``/``or`` in such a test is dropped in turn, and every ``raise`` is
replaced by ``pass``. For each mutant the module is rewritten on disk, the trust tests run
(fastest first, stopping at the first failure), and the module is restored. A mutant no test
kills is reported; the goal is none. Not part of the suite: it takes minutes.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# module -> functions whose conditions make up the gate ("*": every function of the module)
TARGETS: dict[str, tuple[str, ...]] = {
    "gallery/verify/plan.py": ("*",),
    "gallery/operations/gate.py": ("*",),
    "gallery/operations/candidate_loop.py": ("run_candidates",),
    "gallery/operations/runner.py": ("refuse_if_nothing_admitted", "Runner.run", "installed_unverified"),
    "gallery/operations/deploy.py": ("Deployer.deploy",),
    "gallery/operations/locking.py": ("locked_unverified", "locked_resolution"),
    "gallery/operations/bundles.py": ("install_from_bundle", "bundle_resolution"),
    "gallery/catalog/index.py": ("_agreeing", "parse_index", "IndexEntry.names_local_paths"),
    "gallery/catalog/resolve.py": ("_refuse_skipped",),
    "gallery/verify/bundles.py": ("_check_repository", "verify_image_bundle", "_evidence"),
    "gallery/verify/timestamps.py": ("*",),
    "gallery/prepare/tarball.py": ("pin_tarball", "_download"),
    "gallery/prepare/blobcache.py": ("BlobWriter.commit", "BlobWriter._check"),
}
TESTS = [
    "tests/test_trust_plan.py",
    "tests/test_trust_gate.py",
    "tests/test_trust_cases.py",
    "tests/test_install_sources.py",
    "tests/test_bundle.py",
    "tests/test_fleet.py",
    "tests/test_signatures.py",
    "tests/test_index.py",
    "tests/test_resolve.py",
    "tests/test_fsck.py",
    "tests/test_install.py",
    "tests/test_upgrade.py",
    "tests/test_signed_index.py",
    "tests/test_registry.py",
    "tests/test_signed_time.py",
    "tests/test_blobcache.py",
    "tests/test_pin.py",
    "tests/test_sigstore_conformance.py",
    "tests/test_no_bypass.py",
]


@dataclass(frozen=True)
class Mutant:
    path: str
    function: str
    line: int
    what: str
    source: str


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    yield f"{node.name}.{item.name}", item


def mutants(path: str, wanted: tuple[str, ...]) -> Iterator[Mutant]:
    original = ast.parse((REPO / path).read_text())
    for name, function in _functions(original):
        if "*" not in wanted and name not in wanted:
            continue
        for index, node in enumerate(ast.walk(function)):
            if isinstance(node, ast.If):
                yield from _variants(path, name, original, function, index, node)
            elif isinstance(node, ast.Raise):
                yield _mutate(path, name, original, function, index, "raise -> pass", _to_pass)


def _variants(
    path: str, name: str, tree: ast.Module, function: ast.FunctionDef, index: int, node: ast.If
) -> Iterator[Mutant]:
    yield _mutate(path, name, tree, function, index, f"if {ast.unparse(node.test)} -> if False", _if_false)
    if isinstance(node.test, ast.BoolOp):
        for dropped in range(len(node.test.values)):
            operand = ast.unparse(node.test.values[dropped])

            def drop(target: ast.AST, dropped: int = dropped) -> ast.AST:
                assert isinstance(target, ast.If) and isinstance(target.test, ast.BoolOp)
                kept = [v for i, v in enumerate(target.test.values) if i != dropped]
                target.test = kept[0] if len(kept) == 1 else ast.BoolOp(target.test.op, kept)
                return target

            yield _mutate(path, name, tree, function, index, f"drop operand {operand!r}", drop)


def _if_false(node: ast.AST) -> ast.AST:
    assert isinstance(node, ast.If)
    node.test = ast.Constant(False)
    return node


def _to_pass(node: ast.AST) -> ast.AST:
    return ast.Pass()


def _mutate(path: str, name: str, tree: ast.Module, function: ast.FunctionDef, index: int, what: str, change):  # type: ignore[no-untyped-def]
    copied = copy.deepcopy(tree)
    target_function = next(f for n, f in _functions(copied) if n == name)
    target = list(ast.walk(target_function))[index]
    line = getattr(target, "lineno", 0)
    replacement = change(target)
    _replace(target_function, target, replacement)
    return Mutant(path, name, line, what, ast.unparse(ast.fix_missing_locations(copied)))


def _replace(root: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(root):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return
            elif value is old:
                setattr(parent, field, new)
                return


def killed(mutant: Mutant) -> tuple[bool, str]:
    file = REPO / mutant.path
    original = file.read_text()
    try:
        file.write_text(mutant.source)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=REPO, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        file.write_text(original)
    failed = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return run.returncode != 0, (failed[0] if failed else run.stdout.strip().splitlines()[-1])


def _survivors(report: Path) -> set[tuple[str, str, str]]:
    """(module, function, mutation) of every SURVIVED row (line numbers may have moved since)."""
    found = set()
    for line in report.read_text().splitlines():
        if not line.startswith("SURVIVED "):
            continue
        where, _, rest = line.removeprefix("SURVIVED ").partition(" ")
        function, _, what = rest.partition(": ")
        found.add((where.rpartition(":")[0], function, re.split(r" \(\d+ s\) ", what, maxsplit=1)[0]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="only mutants whose module or function contains this")
    parser.add_argument("--report", type=Path, help="write the report here too")
    parser.add_argument(
        "--survivors-of", type=Path, help="only the mutants an earlier report lists as SURVIVED"
    )
    args = parser.parse_args()
    again = _survivors(args.survivors_of) if args.survivors_of else None
    rows, survivors = [], 0
    for path, functions in TARGETS.items():
        for mutant in mutants(path, functions):
            if args.only and args.only not in f"{mutant.path}:{mutant.function}":
                continue
            if again is not None and (mutant.path, mutant.function, mutant.what) not in again:
                continue
            started = time.monotonic()
            dead, why = killed(mutant)
            survivors += not dead
            row = (f"{'killed ' if dead else 'SURVIVED'} {mutant.path}:{mutant.line} {mutant.function}: "
                   f"{mutant.what} ({time.monotonic() - started:.0f} s) {why}")  # fmt: skip
            print(row, flush=True)
            rows.append(row)
    summary = f"{len(rows)} mutants, {len(rows) - survivors} killed, {survivors} survived"
    print(summary)
    if args.report:
        args.report.write_text("\n".join([*rows, summary]) + "\n")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
