"""Turning library results into text (rich) or JSON. Only the CLI talks to the user."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import gallery

from .units import aligned, human_bytes, human_seconds, plural

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Output", "clean"]

# C0/C1 control characters (ESC, CSI, BEL, CR, ...): text from a gallery index is hostile and must
# not be able to move the cursor or rewrite the operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """One terminal-safe line: control characters (newlines included) become spaces, markup is escaped."""
    from rich.markup import escape

    return escape(_CONTROL.sub(" ", text))


class Output:
    """Results go to stdout (text or JSON); notices and errors go to stderr."""

    def __init__(self, *, as_json: bool, quiet: bool = False, color: bool = True) -> None:
        """``quiet``: errors and results only (no notices, warnings or progress); ``color``:
        False for plain text without styles."""
        self.as_json = as_json
        self.quiet = quiet
        self.printed_json = False
        self.reported: set[int] = set()  # results already printed (ids), by the progress display
        self.warned: set[str] = set()
        self._color = color

    # Made on first use: a command that only writes a table or JSON never imports rich.
    @functools.cached_property
    def out(self) -> Console:
        return _console(sys.stdout, self._color)

    @functools.cached_property
    def err(self) -> Console:
        return _console(sys.stderr, self._color)

    def table(self, headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
        """Cells already ``plain``; written directly (rich renders a thousand rows in seconds)."""
        lines = aligned(headers, rows)
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()

    def table_footer(self, text: str) -> None:
        sys.stdout.write(text + "\n")

    def request(self, line: str) -> None:
        """One HTTP request (``-v``), from any thread."""
        self.err.print(f"[dim]http:[/dim] {clean(line)}", highlight=False)

    def warning(self, message: str) -> None:
        """``warning: ...`` on stderr, once per message (the progress display may have said it)."""
        if not self.quiet and message not in self.warned:
            self.warned.add(message)
            self.err.print(f"[yellow]warning:[/yellow] {clean(message)}", highlight=False)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        self.printed_json = True

    def failure(self, message: str, hint: str | None, code: int) -> None:
        """A command that failed as a whole: its error line, and with ``--json`` (when no result
        was printed) the JSON object tools expect: ``{"error": {message, hint}, "exit_code"}``."""
        self.error(message, hint)
        if self.as_json and not self.printed_json:
            self.json({"error": {"message": message, "hint": hint}, "exit_code": code})

    def notices(self, notices: tuple[gallery.Notice, ...] | list[gallery.Notice]) -> None:
        for notice in notices:
            if self.quiet and notice.level != "error":
                continue
            style = "red" if notice.level == "error" else "yellow"
            self.err.print(f"[{style}]{notice.level}:[/{style}] {clean(notice.message)}", highlight=False)

    def error(self, message: str, hint: str | None) -> None:
        """Exactly one line: what failed and why, then the next step."""
        line = f"[red]error:[/red] {clean(message)}"
        if hint:
            line += f" [dim](next: {clean(hint)})[/dim]"
        self.err.print(line, highlight=False, soft_wrap=True)

    def list_result(self, result: gallery.ListResult) -> None:
        self.notices(result.notices)
        if self.as_json:
            self.json(result.to_json())
            return
        rows = []
        for row in result.rows:
            entry = row.entry
            target = entry.uri if entry.uri else ", ".join(f"{k}={v}" for k, v in entry.capabilities.items())
            rows.append((row.gallery, plain(entry.name), row.kind, plain(entry.alias or ""), plain(target)))
        self.table(("GALLERY", "NAME", "KIND", "ALIAS", "URI / CAPABILITIES"), rows)
        self.table_footer(plural(len(result.rows), "entry"))

    def show_result(self, result: gallery.ShowResult) -> None:
        from .show import show_text

        self.notices(result.notices)
        if self.as_json:
            self.json(result.to_json())
            return
        show_text(self.out, result)

    def doctor_report(self, report: gallery.DoctorReport) -> None:
        if self.as_json:
            self.json(report.to_json())
            return
        marks = {"ok": "[green]  ok[/green]", "warning": "[yellow]warn[/yellow]", "error": "[red]FAIL[/red]"}
        for check in report.checks:
            self.out.print(
                f"{marks[check.status]}  {clean(check.name)}: {clean(check.message)}", highlight=False
            )

    def batch_result(self, batch: gallery.BatchResult) -> None:
        hook = batch.hook
        if self.as_json:
            self.json(batch.to_json())
            for result in batch.results:
                if result.error is not None:
                    self.error(result.error.message, result.error.hint)
            if hook is not None and not hook.ok:
                self.err.print(f"[yellow]warning:[/yellow] {clean(hook.describe())}", highlight=False)
            return
        if not batch.results:
            self.out.print("nothing to do (no backends installed)", highlight=False)
        for result in batch.results:
            if id(result) not in self.reported:  # the progress display printed it already
                self.result_line(result)
        if hook is not None:
            if hook.ok:
                if not self.quiet:
                    self.err.print(clean(hook.describe()), highlight=False)
            else:
                self.warning(hook.describe())

    def result_line(self, result: gallery.InstallResult, *, via: Console | None = None) -> None:
        """One backend's outcome: its warnings (each said once), then its error line or
        ``name: status digest, verified (signed by ...) / unverified (why), size fetched in time``.
        ``via``: the console to print through while a live display owns the terminal."""
        for warning in result.warnings:
            self.warning(warning)
        if result.error is not None:
            self.error(_named(result.requested, result.error.message), result.error.hint)
            return
        parts = [f"{clean(result.name or result.requested)}: {result.status}"]
        if result.digest:
            parts.append(f" {result.digest}")
        if result.status not in ("uninstalled", "rolled-back", "verified", "unverified"):
            if result.signer:
                parts.append(f", verified (signed by {clean(result.signer)})")
            elif result.verified:
                parts.append(", verified")
            elif result.digest:
                parts.append(", unverified")
        elif result.signer:
            parts.append(f" (signed by {clean(result.signer)})")
        if result.bytes_fetched:
            parts.append(f", {human_bytes(result.bytes_fetched)} fetched in {human_seconds(result.seconds)}")
        if result.also_removed:
            parts.append(f" (with {', '.join(result.also_removed)})")
        (via or self.out).print("".join(parts), highlight=False)

    def recovery(self, report: gallery.RecoveryReport) -> None:
        for action in report.actions:
            self.err.print(f"[yellow]recovered:[/yellow] {clean(action)}", highlight=False)
        for problem in report.skipped:
            self.err.print(f"[yellow]warning:[/yellow] recovery pending: {clean(problem)}", highlight=False)

    def fsck_report(self, report: gallery.FsckReport, repaired: gallery.BatchResult | None) -> None:
        if repaired is not None:
            for result in repaired.results:
                if result.error is not None:
                    self.error(
                        f"{result.requested}: cannot repair: {result.error.message}", result.error.hint
                    )
        if self.as_json:
            data = report.to_json()
            data["repairs"] = repaired.to_json()["results"] if repaired is not None else []
            self.json(data)
            return
        marks = {True: "[red]DAMAGE[/red]", False: "[yellow]note[/yellow]  "}
        for finding in report.findings:
            line = (
                f"{marks[finding.damage]}  {clean(finding.subject)}: {finding.kind}: {clean(finding.detail)}"
            )
            if finding.repaired:
                line += f" [green](repaired: {clean(finding.repaired)})[/green]"
            self.out.print(line, highlight=False)
        damage = sum(1 for f in report.findings if f.damage and f.repaired is None)
        remain = f"{plural(damage, 'problem')} {'remains' if damage == 1 else 'remain'}"
        verdict = "no damage" if not damage else (
            f"{remain} that --repair could not fix (see above)" if repaired is not None
            else f"{remain} (gallery fsck --repair fixes what it safely can)")  # fmt: skip
        self.out.print(
            f"{report.backends_checked} backends and {report.blobs_checked} cached blobs checked; {verdict}",
            highlight=False,
        )

    def lint_report(self, report: gallery.LintReport) -> None:
        if self.as_json:
            self.json(report.to_json())
            return
        for finding in report.findings:
            style = "red" if finding.level == "error" else "yellow"
            where = f"{clean(finding.entry)}: " if finding.entry else ""
            self.out.print(
                f"[{style}]{finding.level}:[/{style}] {where}{clean(finding.message)}", highlight=False
            )
        errors = sum(1 for f in report.findings if f.level == "error")
        warnings = len(report.findings) - errors
        self.out.print(f"{plural(report.entries, 'entry')}; {plural(errors, 'error')}, "
                       f"{plural(warnings, 'warning')}", highlight=False)  # fmt: skip

    def checksum_report(self, report: gallery.ChecksumReport) -> None:
        if self.as_json:
            self.json(report.to_json())
            return
        # Without --write nothing was added or pinned yet: say what would be.
        unwritten = {"sha256 added": "sha256 to add", "pinned": "to pin"}
        for change in report.changes:
            style = "red" if change.kind in ("sha256 MISMATCH", "failed") else "green"
            kind = change.kind if report.written else unwritten.get(change.kind, change.kind)
            self.out.print(f"{clean(change.entry)}: [{style}]{kind}[/{style}] {clean(change.detail)}",
                           highlight=False)  # fmt: skip
        pending = [c for c in report.changes if c.kind in ("sha256 added", "pinned")]
        if report.written:
            self.out.print(f"wrote {plural(len(pending), 'change')}", highlight=False)
        elif pending:
            self.out.print(f"{plural(len(pending), 'change')} not written (use --write)", highlight=False)

    def bundle_evidence(self, evidence: gallery.Evidence) -> None:
        if self.as_json:
            self.json(evidence.model_dump(mode="json", exclude={"bundle"}, exclude_none=True))
            return
        when = evidence.signing_time.isoformat() if evidence.signing_time else "unknown time"
        source = (
            f"timestamp by {evidence.timestamp_authority}"
            if evidence.time_source == "timestamp-authority"
            else "transparency log time"
        )
        self.out.print(
            f"verified: {evidence.digest} signed by {clean(evidence.identity or '?')} "
            f"(issuer {clean(evidence.issuer or '?')}) at {when} ({source}), log index {evidence.log_index}",
            highlight=False,
        )

    def prune_result(self, result: gallery.PruneResult) -> None:
        if self.as_json:
            self.json(result.to_json())
            return
        self.out.print(
            f"removed {len(result.removed)} blobs and {result.partials_removed} partial downloads "
            f"({human_bytes(result.bytes_freed)}); kept {result.kept} referenced blobs",
            highlight=False,
        )

    def installed(
        self,
        backends: list[gallery.BackendMetadata],
        updates: dict[str, gallery.UpdateCheck] | None,
        *,
        sideloaded: Sequence[str] = (),
        system: Sequence[str] = (),
        usage: gallery.DiskUsage | None = None,
    ) -> None:
        updates = updates if updates is not None else {}
        sizes = usage.backends if usage is not None else {}
        if self.as_json:
            self.json({"installed": [
                {**b.model_dump(mode="json", exclude={"files"}, exclude_none=True),
                 **gallery.installed_summary(b, updates.get(b.name)), **_usage_json(sizes.get(b.name))}
                for b in backends
            ], "sideloaded": list(sideloaded), "system": list(system),
               **({"disk": usage.to_json()} if usage is not None else {})})  # fmt: skip
            return
        rows = []
        for backend in backends:
            summary = gallery.installed_summary(backend, updates.get(backend.name))
            signed = (summary["signed_at"] or "")[:10] if summary["verified"] else "unverified"
            note = f"meta-backend for {backend.meta_backend_for}" if backend.meta_backend_for else ""
            if backend.written_by_localai:
                note = "installed by LocalAI"
            update = updates.get(backend.name)
            rows.append((
                plain(backend.name),
                plain(backend.gallery or backend.gallery_url or ""),
                (backend.digest or "")[:19],
                "" if backend.meta_backend_for else signed,
                "" if backend.meta_backend_for or update is None else plain(_short_update(update)),
                _size(sizes.get(backend.name)),
                plain(note),
            ))  # fmt: skip
        for name in sideloaded:
            rows.append((plain(name), "", "", "unverified", "", "", "sideloaded (run.sh, no metadata)"))
        for name in system:
            rows.append((plain(name), "", "", "unverified", "", "", "LocalAI system backend (read-only)"))
        self.table(("NAME", "GALLERY", "DIGEST", "SIGNED", "UPDATE", "SIZE", "NOTE"), rows)
        extra = f", {len(sideloaded)} sideloaded" if sideloaded else ""
        extra += f", {len(system)} system" if system else ""
        if usage is not None and usage.with_copies:
            extra += f"; {human_bytes(usage.on_disk)} on disk for {human_bytes(usage.with_copies)} of files"
        self.table_footer(f"{len(backends)} installed{extra}")


def _size(usage: gallery.BackendUsage | None) -> str:
    """A backend's size, and what of it other trees share (stored once)."""
    if usage is None:
        return ""
    return human_bytes(usage.bytes) + (f" ({human_bytes(usage.shared)} shared)" if usage.shared else "")


def _usage_json(usage: gallery.BackendUsage | None) -> dict[str, int]:
    return {} if usage is None else {"bytes": usage.bytes, "shared_bytes": usage.shared}


def _short_update(update: gallery.UpdateCheck) -> str:
    if update.available is None:
        return "unknown"
    if not update.available:
        return "older build refused" if update.reason else "up to date"
    return "newer signed build" if update.verified else "newer build (unverified)"


def _console(file: IO[str], color: bool) -> Console:
    """A rich console with an explicit empty environment (the CLI reads no environment variables,
    rich included). Piped output is not wrapped at 80 columns: a table row stays one line."""
    from rich.console import Console

    isatty = getattr(file, "isatty", None)
    terminal = bool(isatty and isatty())
    return Console(file=file, _environ={}, soft_wrap=True, color_system="auto" if color else None,
                   width=None if terminal else 4096, no_color=not color)  # fmt: skip


def _named(requested: str, message: str) -> str:
    """``x: why`` — unless the message already names ``x`` (``x is not installed``)."""
    if re.search(rf"(?<![\w.-]){re.escape(requested)}(?![\w.-])", message):
        return message
    return f"{requested}: {message}"


def plain(text: str) -> str:
    """One terminal-safe line of plain text (no markup: written as it is)."""
    return _CONTROL.sub(" ", text)
