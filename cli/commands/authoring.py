"""lint, checksum: for gallery publishers, before an index is published."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gallery import (
    Config,
    GalleryError,
    SigstoreVerifier,
    VerificationPolicy,
    checksum_index,
    lint_files,
    make_http_client,
)

from ..app import Globals, JsonFlag, app, execute
from ..render import Output


@app.command("lint")
def lint_command(
    ctx: typer.Context,
    index: Annotated[Path, typer.Argument(help="A gallery index file (YAML).", dir_okay=False)],
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Its cosign sign-blob bundle: must sign these bytes.")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="With --signature: the signer's issuer.")
    ] = None,
    issuer_regex: Annotated[str | None, typer.Option("--issuer-regex")] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="With --signature: the signer.")] = None,
    identity_regex: Annotated[str | None, typer.Option("--identity-regex")] = None,
    trusted_root: Annotated[
        str, typer.Option("--trusted-root", help="'production' or a trusted_root.json.")
    ] = "production",
    as_json: JsonFlag = False,
) -> None:
    """Check a gallery index before publishing it: every entry as the installer reads it, plus
    meta-backend targets, alias clashes and hashes; with --signature, that the index's signature
    is over these exact bytes (and by the given signer). Exit 2 on errors, 3 on a bad signature;
    needs no config."""
    out = Output(as_json=as_json)
    options: Globals = ctx.obj
    policy = None
    if any((issuer, issuer_regex, identity, identity_regex)):
        try:
            policy = VerificationPolicy(issuer=issuer, issuer_regex=issuer_regex, identity=identity,
                                        identity_regex=identity_regex)  # fmt: skip
        except ValueError as exc:
            out.error(f"the signer options do not make a policy: {exc}", "give --issuer and --identity")
            raise typer.Exit(2) from None
    try:
        report = lint_files(
            index, signature, policy=policy, trusted_root=trusted_root, verifier=SigstoreVerifier()
        )
    except GalleryError as exc:
        if options.debug:
            raise
        out.error(exc.message, exc.hint)
        raise typer.Exit(exc.code()) from None
    out.lint_report(report)
    raise typer.Exit(report.exit_code)


@app.command("checksum")
def checksum_command(
    ctx: typer.Context,
    index: Annotated[Path, typer.Argument(help="A gallery index file (YAML).", dir_okay=False)],
    write: Annotated[
        bool, typer.Option("--write", help="Edit the index in place (only those values).")
    ] = False,
    pin: Annotated[
        bool, typer.Option("--pin", help="Also pin OCI uris to the digest their tag has now.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check or fill in tarball sha256s (and with --pin, pin OCI uris to digests) so a gallery can
    be published fully pinned (exit 3 on a sha256 mismatch)."""
    out = Output(as_json=as_json)

    def action(config: Config) -> int:
        with make_http_client(config) as client:
            report = checksum_index(index, config=config, client=client, write=write, pin=pin)
        out.checksum_report(report)
        return report.exit_code

    execute(ctx, out, action)
