"""The journaled swap on its own: order of operations, and a failure at every filesystem step.

Each test builds real directories in tmp_path (ext4 here, so RENAME_EXCHANGE is real) and runs
``Swapper`` through a recording/failing filesystem layer. After any failure, and after recovery
with a healthy filesystem, ``backends/<name>`` must equal the old or the new version file-for-file.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from gallery.errors import OperationalError
from gallery.place.swap import STEPS, StateDir, Swapper, recover_pending

from .fsfaults import RecordingFsOps, tree


def make_backend(path: Path, name: str, version: str, extra: dict[str, bytes] | None = None) -> Path:
    path.mkdir(parents=True, mode=0o755)
    (path / "run.sh").write_text(f"#!/bin/sh\necho {version}\n")
    (path / "lib").mkdir()
    (path / "lib" / f"only-in-{version}.so").write_bytes(version.encode() * 100)
    for rel, data in (extra or {}).items():
        (path / rel).write_bytes(data)
    digest = "sha256:" + (version.encode().hex() * 64)[:64]
    (path / "metadata.json").write_text(json.dumps({"name": name, "format_version": 1, "digest": digest}))
    path.chmod(0o755)
    return path


@pytest.fixture
def backends(tmp_path: Path) -> Path:
    root = tmp_path / "backends"
    root.mkdir()
    return root


def _staged(backends: Path, version: str) -> Path:
    path = StateDir(backends).new_staging("b")
    path.rmdir()
    return make_backend(path, "b", version)


def reference(tmp_path: Path, version: str) -> dict[str, tuple[str, int, bytes]]:
    return tree(make_backend(tmp_path / "reference" / version, "b", version))


def leftovers(backends: Path) -> list[Path]:
    state = StateDir(backends)
    found = [p for parent in (state.staging, state.trash, state.journals) if parent.is_dir()
             for p in parent.iterdir()]  # fmt: skip
    return found


def test_upgrade_order_of_operations(backends: Path) -> None:
    make_backend(backends / "b", "b", "v1")
    new = _staged(backends, "v2")
    fs = RecordingFsOps()
    steps: list[str] = []
    Swapper(backends, keep_generations=1, fs=fs, step=steps.append).place("b", new, op="upgrade")
    ops = [c[0] for c in fs.calls]
    sync_files = ops.index("sync_files")
    staging_dirs = [i for i, c in enumerate(fs.calls) if c[0] == "fsync_dir" and c[1].startswith(str(new))]
    journal = ops.index("write_file")
    exchange = ops.index("exchange")
    parent = next(i for i, c in enumerate(fs.calls) if c == ("fsync_dir", str(backends)))
    # fsync(files) -> fsync(every staged directory, deepest first) -> journal -> exchange -> fsync(parent)
    assert sync_files < min(staging_dirs) and max(staging_dirs) < journal < exchange < parent
    assert fs.calls[staging_dirs[-1]] == ("fsync_dir", str(new)), "the staged root is synced last"
    assert steps == ["synced", "journaled", "exchanged", "checked", "retired", "pruned", "done"]
    assert set(steps) <= set(STEPS)
    assert (backends / "b" / "lib" / "only-in-v2.so").exists()
    assert not (backends / "b" / "lib" / "only-in-v1.so").exists(), "files removed in v2 are gone"
    kept = StateDir(backends).kept("b")
    assert [p.name for p in kept] == ["1"] and (kept[0] / "lib" / "only-in-v1.so").exists()
    assert leftovers(backends) == []


def test_two_renames_where_exchange_is_unavailable(backends: Path) -> None:
    make_backend(backends / "b", "b", "v1")
    fs = RecordingFsOps(exchange_supported=False)
    steps: list[str] = []
    Swapper(backends, keep_generations=1, fs=fs, step=steps.append).place(
        "b", _staged(backends, "v2"), op="upgrade"
    )
    assert steps == ["synced", "journaled", "moved-live", "placed", "checked", "retired", "pruned", "done"]
    assert (backends / "b" / "lib" / "only-in-v2.so").exists() and leftovers(backends) == []


def _uninterrupted_calls(tmp_path: Path, exchange: bool, op: str) -> int:
    root = tmp_path / "dry" / op / str(exchange)
    root.mkdir(parents=True)
    fs = RecordingFsOps(exchange_supported=exchange)
    _run(root, fs, op)
    return len(fs.calls)


def _prepare(backends: Path, op: str) -> None:
    make_backend(backends / "b", "b", "v1")
    if op == "rollback":
        make_backend(StateDir(backends).generations("b") / "1", "b", "v0")


def _run(backends: Path, fs: RecordingFsOps, op: str) -> None:
    _prepare(backends, op)
    swapper = Swapper(backends, keep_generations=1, fs=fs)
    if op == "upgrade":
        swapper.place("b", _staged(backends, "v2"), op="upgrade")
    elif op == "rollback":
        swapper.rollback("b")
    else:
        swapper.remove("b")


CASES = [(op, exchange, code, sticky) for op in ("upgrade", "rollback", "uninstall") for exchange in (True, False)
         for code, sticky in ((errno.ENOSPC, False), (errno.EIO, False), (errno.EIO, True))]  # fmt: skip


@pytest.mark.parametrize(("op", "exchange", "code", "sticky"), CASES)
def test_a_failure_at_every_filesystem_step_leaves_old_or_new(
    tmp_path: Path, op: str, exchange: bool, code: int, sticky: bool
) -> None:
    total = _uninterrupted_calls(tmp_path, exchange, op)
    assert total >= 8
    versions = {"upgrade": ("v1", "v2"), "rollback": ("v1", "v0"), "uninstall": ("v1", None)}[op]
    old, new = (reference(tmp_path, v) if v else None for v in versions)
    outcomes = set()
    pending_after_failure = 0
    for fail_at in range(total):
        backends = tmp_path / f"run-{fail_at}"
        backends.mkdir()
        fs = RecordingFsOps(fail_at=fail_at, fail_errno=code, exchange_supported=exchange, sticky=sticky)
        try:
            _run(backends, fs, op)
            failed = False
        except OperationalError as exc:
            failed = True
            assert "b" in exc.message and exc.hint
        live = tree(backends / "b") if (backends / "b").exists() else None
        if not sticky:  # with the disk still failing, two renames may leave b/ missing until recovery
            assert live in (old, new), f"failing call {fail_at} {fs.calls[fail_at]} left a mix"
        # The next command recovers with a healthy filesystem.
        pending_after_failure += StateDir(backends).journal("b").exists()
        report = recover_pending(backends, keep_generations=1)
        assert not report.skipped
        after = tree(backends / "b") if (backends / "b").exists() else None
        assert after in (old, new) and leftovers(backends) == [], fs.calls[fail_at]
        if after == old and op == "rollback":
            assert StateDir(backends).kept("b"), "an undone rollback keeps its generation"
        outcomes.add((failed, "new" if after == new else "old"))
    assert (True, "old") in outcomes and (True, "new") in outcomes, outcomes
    if sticky:  # the in-process undo failed too: recovery had to read the disk to settle it
        assert pending_after_failure >= 3


def test_failed_post_swap_check_swaps_back(backends: Path, tmp_path: Path) -> None:
    make_backend(backends / "b", "b", "v1")
    old = tree(backends / "b")

    def broken(path: Path) -> None:
        raise OperationalError(f"{path}: does not start")

    with pytest.raises(OperationalError, match="unchanged"):
        Swapper(backends, keep_generations=1).place("b", _staged(backends, "v2"), op="upgrade", check=broken)
    assert tree(backends / "b") == old and leftovers(backends) == [] and not StateDir(backends).kept("b")


def test_generations_are_pruned_to_keep_generations(backends: Path) -> None:
    make_backend(backends / "b", "b", "v1")
    swapper = Swapper(backends, keep_generations=2)
    for version in ("v2", "v3", "v4"):
        swapper.place("b", _staged(backends, version), op="upgrade")
    kept = StateDir(backends).kept("b")
    assert [json.loads((k / "metadata.json").read_text())["digest"] for k in kept] == [
        json.loads((make_backend(backends.parent / f"r{v}", "b", v) / "metadata.json").read_text())["digest"]
        for v in ("v2", "v3")
    ]
    swapper.rollback("b")
    swapper.rollback("b")
    assert (backends / "b" / "lib" / "only-in-v2.so").exists()
    with pytest.raises(OperationalError, match="no previous version"):
        swapper.rollback("b")


def test_keep_generations_zero_keeps_nothing(backends: Path) -> None:
    make_backend(backends / "b", "b", "v1")
    Swapper(backends, keep_generations=0).place("b", _staged(backends, "v2"), op="upgrade")
    assert StateDir(backends).kept("b") == [] and leftovers(backends) == []


def test_a_damaged_journal_is_reported_not_guessed(backends: Path) -> None:
    make_backend(backends / "b", "b", "v1")
    state = StateDir(backends)
    state.journals.mkdir(parents=True)
    state.journal("b").write_text("{not json")
    report = recover_pending(backends, keep_generations=1)
    assert report.skipped and "unreadable" in report.skipped[0]
    escaping = {"op": "upgrade", "name": "b", "incoming": "../../etc", "incoming_ino": 1, "old_ino": None,
                "outgoing": "trash/b.1", "aside": "trash/b.2", "discard_incoming": True,
                "started_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    state.journal("b").write_text(json.dumps(escaping))
    report = recover_pending(backends, keep_generations=1)
    assert report.skipped and "outside" in report.skipped[0]
    assert (backends / "b" / "run.sh").exists() and state.journal("b").exists()


# -- single lines that guard the swap (each test fails if its line is deleted) -------------------


def test_the_post_swap_check_refuses_a_symlinked_run_sh_and_a_foreign_metadata(tmp_path: Path) -> None:
    from gallery.place.swap import check_backend

    good = make_backend(tmp_path / "good", "b", "v1")
    check_backend(good, "b")
    linked = make_backend(tmp_path / "linked", "b", "v1")
    (linked / "run.sh").unlink()
    (linked / "run.sh").symlink_to("/bin/true")
    with pytest.raises(OperationalError, match=r"run\.sh is missing"):
        check_backend(linked, "b")
    foreign = make_backend(tmp_path / "foreign", "other", "v1")
    with pytest.raises(OperationalError, match="names another backend"):
        check_backend(foreign, "b")


def _journal(name: str, **fields: object) -> dict[str, object]:
    return {"op": "upgrade", "name": name, "incoming": f"staging/{name}.1", "incoming_ino": 1, "old_ino": None,
            "outgoing": f"trash/{name}.1", "aside": f"trash/{name}.2", "discard_incoming": True,
            "started_at": "2026-01-01T00:00:00Z", **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"name": "other"}, "names 'other'"), ({"format_version": 99}, "written by a newer gallery")],
    ids=["another backend", "newer format"],
)
def test_a_journal_for_another_backend_or_from_a_newer_gallery_is_not_acted_on(
    backends: Path, fields: dict[str, object], reason: str
) -> None:
    make_backend(backends / "b", "b", "v1")
    state = StateDir(backends)
    state.journals.mkdir(parents=True)
    state.journal("b").write_text(json.dumps({**_journal("b"), **fields}))
    report = recover_pending(backends, keep_generations=1)
    assert report.skipped and reason in report.skipped[0], report
    assert (backends / "b" / "run.sh").exists() and state.journal("b").exists()


def test_finish_makes_the_retired_version_durable_after_moving_it(backends: Path) -> None:
    """After an exchange the old version sits in staging; _finish moves it to generations/ and
    then fsyncs the three directories that rename changed."""
    make_backend(backends / "b", "b", "v1")
    fs = RecordingFsOps(exchange_supported=True)
    Swapper(backends, keep_generations=1, fs=fs).place("b", _staged(backends, "v2"), op="upgrade")
    generations = StateDir(backends).generations("b")
    moved = next(i for i, c in enumerate(fs.calls) if c[0] == "rename" and c[2].startswith(str(generations)))
    after = fs.calls[moved + 1 : moved + 4]
    assert [c[0] for c in after] == ["fsync_dir"] * 3, fs.calls[moved:]
    assert {c[1] for c in after} == {
        str(generations),
        str(generations.parent),
        str(StateDir(backends).staging),
    }


def test_undo_makes_the_restored_version_durable(backends: Path) -> None:
    """The post-swap check fails: the old version is renamed back, then its parents fsynced."""
    make_backend(backends / "b", "b", "v1")
    fs = RecordingFsOps(exchange_supported=False)

    def broken(path: Path) -> None:
        raise OperationalError(f"{path}: does not start")

    with pytest.raises(OperationalError):
        Swapper(backends, keep_generations=1, fs=fs).place(
            "b", _staged(backends, "v2"), op="upgrade", check=broken
        )
    back = max(i for i, c in enumerate(fs.calls) if c[0] == "rename" and c[2] == str(backends / "b"))
    assert ("fsync_dir", str(backends)) in fs.calls[back + 1 :], fs.calls[back:]
