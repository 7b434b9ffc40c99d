"""Turning library results into text (rich) or JSON. Only the CLI talks to the user."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gallery import (
    BackendMetadata,
    BatchResult,
    ChecksumReport,
    DoctorReport,
    Evidence,
    FsckReport,
    LintReport,
    ListResult,
    Notice,
    PruneResult,
    RecoveryReport,
    ShowResult,
    UpdateCheck,
    installed_summary,
)

__all__ = ["Output", "clean"]

# C0/C1 control characters (ESC, CSI, BEL, CR, ...): text from a gallery index is hostile and must
# not be able to move the cursor or rewrite the operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """One terminal-safe line: control characters (newlines included) become spaces, markup is escaped."""
    return escape(_CONTROL.sub(" ", text))


class Output:
    """Results go to stdout (text or JSON); notices and errors go to stderr."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.printed_json = False
        # An explicit empty environment: the CLI reads no environment variables, rich included.
        self.out = Console(file=sys.stdout, _environ={}, soft_wrap=True)
        self.err = Console(file=sys.stderr, _environ={}, soft_wrap=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        self.printed_json = True

    def failure(self, message: str, hint: str | None, code: int) -> None:
        """A command that failed as a whole: its error line, and with ``--json`` (when no result
        was printed) the JSON object tools expect: ``{"error": {message, hint}, "exit_code"}``."""
        self.error(message, hint)
        if self.as_json and not self.printed_json:
            self.json({"error": {"message": message, "hint": hint}, "exit_code": code})

    def notices(self, notices: tuple[Notice, ...] | list[Notice]) -> None:
        for notice in notices:
            style = "red" if notice.level == "error" else "yellow"
            self.err.print(f"[{style}]{notice.level}:[/{style}] {clean(notice.message)}", highlight=False)

    def error(self, message: str, hint: str | None) -> None:
        """Exactly one line: what failed and why, then the next step."""
        line = f"[red]error:[/red] {clean(message)}"
        if hint:
            line += f" [dim](next: {clean(hint)})[/dim]"
        self.err.print(line, highlight=False, soft_wrap=True)

    def list_result(self, result: ListResult) -> None:
        self.notices(result.notices)
        if self.as_json:
            self.json(result.to_json())
            return
        table = Table(box=None, pad_edge=False)
        for column in ("GALLERY", "NAME", "KIND", "ALIAS", "URI / CAPABILITIES"):
            table.add_column(column, overflow="fold")
        for row in result.rows:
            entry = row.entry
            target = entry.uri if entry.uri else ", ".join(f"{k}={v}" for k, v in entry.capabilities.items())
            table.add_row(row.gallery, entry.name, row.kind, entry.alias or "", clean(target))
        self.out.print(table, highlight=False)
        self.out.print(f"{len(result.rows)} entries", highlight=False)

    def show_result(self, result: ShowResult) -> None:
        self.notices(result.notices)
        if self.as_json:
            self.json(result.to_json())
            return
        p = self.out.print
        entry = result.entry
        p(f"[bold]{clean(entry.name)}[/bold]  (gallery {clean(result.gallery)})", highlight=False)
        if result.via_alias:
            p(f"  found by alias {clean(repr(result.requested))}", highlight=False)
        if result.shadowed_in:
            p(f"  also in: {', '.join(result.shadowed_in)} (use GALLERY@NAME)", highlight=False)
        if result.meta is not None and result.capability is not None:
            cap = result.capability
            p(
                f"  meta-backend {clean(result.meta.name)}: capability {cap['capability']} "
                f"({cap['capability_source']}) -> {clean(entry.name)}",
                highlight=False,
            )
            for skipped in cap.get("passed_over", []):
                why = f"{skipped['capability']} -> {clean(skipped['entry'])}: {clean(skipped['reason'])}"
                p(f"    passed over {why}", highlight=False)
        for label, value in (("version", entry.version), ("license", entry.license), ("alias", entry.alias)):
            if value:
                p(f"  {label}: {clean(value)}", highlight=False)
        if entry.description:
            p(f"  description: {clean(entry.description.strip().splitlines()[0])}", highlight=False)
        p("  candidates, in order:", highlight=False)
        for number, candidate in enumerate(result.candidates, 1):
            note = f"  ({clean(candidate.note)})" if candidate.note else ""
            p(
                f"    {number}. {clean('[' + candidate.kind + ']')} {clean(candidate.uri)}{note}",
                highlight=False,
            )
            if len(candidate.endpoints) > 1:
                p(f"       registries: {', '.join(candidate.endpoints)}", highlight=False)
            if candidate.proves:
                p(f"       must prove: {clean(candidate.proves)}", highlight=False)
        if result.policy is None:
            p("  verification: no policy", highlight=False)
        else:
            policy = ", ".join(f"{k}={v}" for k, v in result.policy.items())
            p(f"  verification: {clean(policy)}", highlight=False)
        p(
            f"  protection: {result.protection}; strict mode {'on' if result.strict_mode else 'off'}",
            highlight=False,
        )
        if result.refusal:
            p(f"  [red]would be refused:[/red] {clean(result.refusal)}", highlight=False)
        if result.warning:
            p(f"  [yellow]warning:[/yellow] {clean(result.warning)}", highlight=False)
        if result.installed is not None:
            summary = installed_summary(result.installed, result.update)
            signed = (
                f"signed by {summary['signer']} at {summary['signed_at']}"
                if summary["verified"]
                else "unverified"
            )
            p(f"  installed: {clean(summary['digest'] or '')}, {clean(signed)}", highlight=False)
            p(f"  update: {clean(_update_text(result.update))}", highlight=False)

    def doctor_report(self, report: DoctorReport) -> None:
        if self.as_json:
            self.json(report.to_json())
            return
        marks = {"ok": "[green]  ok[/green]", "warning": "[yellow]warn[/yellow]", "error": "[red]FAIL[/red]"}
        for check in report.checks:
            self.out.print(
                f"{marks[check.status]}  {clean(check.name)}: {clean(check.message)}", highlight=False
            )

    def batch_result(self, batch: BatchResult) -> None:
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
            for warning in result.warnings:
                self.err.print(f"[yellow]warning:[/yellow] {clean(warning)}", highlight=False)
            if result.error is not None:
                message = result.error.message
                named = (
                    message
                    if message.startswith(f"{result.requested}: ")
                    else f"{result.requested}: {message}"
                )
                self.error(named, result.error.hint)
                continue
            detail = f" {result.digest}" if result.digest else ""
            verified = (
                f", signed by {clean(result.signer)}"
                if result.signer
                else " (verified)"
                if result.verified
                else ""
            )
            fetched = f", {result.bytes_fetched} bytes fetched" if result.bytes_fetched else ""
            if result.also_removed:
                fetched += f" (with {', '.join(result.also_removed)})"
            self.out.print(
                f"{clean(result.name or result.requested)}: {result.status}{detail}{verified}{fetched}",
                highlight=False,
            )
        if hook is not None:
            mark = "" if hook.ok else "[yellow]warning:[/yellow] "
            self.err.print(f"{mark}{clean(hook.describe())}", highlight=False)

    def recovery(self, report: RecoveryReport) -> None:
        for action in report.actions:
            self.err.print(f"[yellow]recovered:[/yellow] {clean(action)}", highlight=False)
        for problem in report.skipped:
            self.err.print(f"[yellow]warning:[/yellow] recovery pending: {clean(problem)}", highlight=False)

    def fsck_report(self, report: FsckReport, repaired: BatchResult | None) -> None:
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
        self.out.print(
            f"{report.backends_checked} backends and {report.blobs_checked} cached blobs checked; "
            + (
                f"{plural(damage, 'problem')} remain (gallery fsck --repair fixes what it safely can)"
                if damage
                else "no damage"
            ),
            highlight=False,
        )

    def lint_report(self, report: LintReport) -> None:
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

    def checksum_report(self, report: ChecksumReport) -> None:
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

    def bundle_evidence(self, evidence: Evidence) -> None:
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

    def prune_result(self, result: PruneResult) -> None:
        if self.as_json:
            self.json(result.to_json())
            return
        self.out.print(
            f"removed {len(result.removed)} blobs and {result.partials_removed} partial downloads "
            f"({result.bytes_freed} bytes); kept {result.kept} referenced blobs",
            highlight=False,
        )

    def installed(self, backends: list[BackendMetadata], updates: dict[str, UpdateCheck] | None, *,
                  sideloaded: Sequence[str] = (), system: Sequence[str] = ()) -> None:  # fmt: skip
        updates = updates if updates is not None else {}
        if self.as_json:
            self.json({"installed": [
                {**b.model_dump(mode="json", exclude={"files"}, exclude_none=True),
                 **installed_summary(b, updates.get(b.name))}
                for b in backends
            ], "sideloaded": list(sideloaded), "system": list(system)})  # fmt: skip
            return
        table = Table(box=None, pad_edge=False)
        for column in ("NAME", "GALLERY", "DIGEST", "SIGNED", "UPDATE", "NOTE"):
            table.add_column(column, overflow="fold")
        for backend in backends:
            summary = installed_summary(backend, updates.get(backend.name))
            signed = (summary["signed_at"] or "")[:10] if summary["verified"] else "unverified"
            note = f"meta-backend for {backend.meta_backend_for}" if backend.meta_backend_for else ""
            if backend.written_by_localai:
                note = "installed by LocalAI"
            update = updates.get(backend.name)
            table.add_row(
                clean(backend.name),
                clean(backend.gallery or backend.gallery_url or ""),
                (backend.digest or "")[:19],
                "" if backend.meta_backend_for else signed,
                "" if backend.meta_backend_for or update is None else clean(_short_update(update)),
                note,
            )
        for name in sideloaded:
            table.add_row(clean(name), "", "", "unverified", "", "sideloaded (run.sh, no metadata)")
        for name in system:
            table.add_row(clean(name), "", "", "unverified", "", "LocalAI system backend (read-only)")
        self.out.print(table, highlight=False)
        extra = f", {len(sideloaded)} sideloaded" if sideloaded else ""
        extra += f", {len(system)} system" if system else ""
        self.out.print(f"{len(backends)} installed{extra}", highlight=False)


def _short_update(update: UpdateCheck) -> str:
    if update.available is None:
        return "unknown"
    if not update.available:
        return "older build refused" if update.reason else "up to date"
    return "newer signed build" if update.verified else "newer build (unverified)"


def _update_text(update: UpdateCheck | None) -> str:
    if update is None:
        return "not checked"
    if update.available is None:
        return f"unknown: {update.reason}"
    if not update.available:
        return (
            f"the gallery offers an older build, refused: {update.reason}" if update.reason else "up to date"
        )
    signer = f", signed by {update.signer}" if update.signer else ", unverified"
    return f"{update.digest} is on offer{signer} ('gallery upgrade NAME')"


def plural(count: int, noun: str) -> str:
    """``1 problem``, ``2 problems``, ``2 entries``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"
