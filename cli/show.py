"""``gallery show``: how a name resolves, as text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gallery

from .render import clean

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["show_text"]


def show_text(console: Console, result: gallery.ShowResult) -> None:
    """The entry, its meta-backend choice, candidates in order (what each must prove), the policy,
    strict mode, and when installed its signer and whether a newer signed build is on offer."""
    p = console.print
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
        summary = gallery.installed_summary(result.installed, result.update)
        signed = (
            f"signed by {summary['signer']} at {summary['signed_at']}"
            if summary["verified"]
            else "unverified"
        )
        p(f"  installed: {clean(summary['digest'] or '')}, {clean(signed)}", highlight=False)
        p(f"  update: {clean(_update_text(result.update))}", highlight=False)


def _update_text(update: gallery.UpdateCheck | None) -> str:
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
