"""init, lint, checksum, verify-bundle: a starter config, and checks for gallery publishers before an
index is published."""

from pathlib import Path
from typing import Annotated

import typer

import gallery

from ..app import JsonFlag, app, execute, http_client, output_for, reported_errors
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
    issuer_regex: Annotated[
        str | None,
        typer.Option("--issuer-regex", metavar="REGEX", help="With --signature: the issuer, as a regex."),
    ] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="With --signature: the signer.")] = None,
    identity_regex: Annotated[
        str | None,
        typer.Option("--identity-regex", metavar="REGEX", help="With --signature: the signer, as a regex."),
    ] = None,
    trusted_root: Annotated[
        str, typer.Option("--trusted-root", help="'production' or a trusted_root.json.")
    ] = "production",
    as_json: JsonFlag = False,
) -> None:
    """Check a gallery index before publishing it: every entry as the installer reads it, plus
    meta-backend targets, alias clashes and hashes; with --signature, that the index's signature
    is over these exact bytes (and by the given signer). Exit 2 on errors, 3 on a bad signature;
    needs no config."""
    out = output_for(ctx, as_json)
    policy = None
    if any((issuer, issuer_regex, identity, identity_regex)):
        policy = _signer_policy(out, issuer, issuer_regex, identity, identity_regex)
    with reported_errors(ctx, out):
        report = gallery.lint_files(
            index, signature, policy=policy, trusted_root=trusted_root, verifier=gallery.SigstoreVerifier()
        )
    out.lint_report(report)
    raise typer.Exit(report.exit_code)


@app.command("verify-bundle")
def verify_bundle_command(
    ctx: typer.Context,
    artifact: Annotated[
        str | None,
        typer.Argument(help="The signed file, or its digest sha256:<hex> (an image's manifest digest)."),
    ] = None,
    bundle: Annotated[
        Path, typer.Option("--bundle", help="The Sigstore bundle (.sigstore.json).", dir_okay=False)
    ] = Path("bundle.sigstore.json"),
    digest: Annotated[
        str | None, typer.Option("--digest", help="The artifact's digest, instead of ARTIFACT.")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option("--issuer", "--certificate-oidc-issuer", help="The signer's OIDC issuer.")
    ] = None,
    issuer_regex: Annotated[
        str | None,
        typer.Option("--issuer-regex", metavar="REGEX", help="With --signature: the issuer, as a regex."),
    ] = None,
    identity: Annotated[
        str | None, typer.Option("--identity", "--certificate-identity", help="The signer's identity.")
    ] = None,
    identity_regex: Annotated[
        str | None,
        typer.Option("--identity-regex", metavar="REGEX", help="With --signature: the signer, as a regex."),
    ] = None,
    trusted_root: Annotated[
        str, typer.Option("--trusted-root", help="'production' or a trusted_root.json.")
    ] = "production",
    predicate_type: Annotated[
        str,
        typer.Option("--predicate-type", help="The in-toto predicate a DSSE bundle must carry; 'any'."),
    ] = gallery.COSIGN_PREDICATE,
    as_json: JsonFlag = False,
) -> None:
    """Check one Sigstore bundle offline, with the installer's own policy code: exit 0 when it
    verifies, 3 when it does not (the reason is printed). For publishers debugging a signature."""
    out = output_for(ctx, as_json)
    if (artifact is None) == (digest is None):
        out.error("give the artifact or --digest, not both", "e.g. gallery verify-bundle FILE --bundle B ...")
        raise typer.Exit(2)
    policy = _signer_policy(out, issuer, issuer_regex, identity, identity_regex)
    with reported_errors(ctx, out):
        evidence = gallery.verify_bundle_file(
            str(artifact or digest),
            bundle,
            policy=policy,
            verifier=gallery.SigstoreVerifier(),
            trusted_root=trusted_root,
            predicate_type=None if predicate_type == "any" else predicate_type,
        )
    out.bundle_evidence(evidence)
    raise typer.Exit(0)


def _signer_policy(
    out: Output,
    issuer: str | None,
    issuer_regex: str | None,
    identity: str | None,
    identity_regex: str | None,
) -> "gallery.VerificationPolicy":
    try:
        return gallery.VerificationPolicy(issuer=issuer, issuer_regex=issuer_regex, identity=identity,
                                  identity_regex=identity_regex)  # fmt: skip
    except ValueError as exc:
        out.error(f"the signer options do not make a policy: {exc}", "give --issuer and --identity")
        raise typer.Exit(2) from None


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
    out = output_for(ctx, as_json)

    def action(config: gallery.Config) -> int:
        with http_client(ctx, out, config) as client:
            report = gallery.checksum_index(index, config=config, client=client, write=write, pin=pin)
        out.checksum_report(report)
        return report.exit_code

    execute(ctx, out, action)


@app.command("init")
def init_command(
    ctx: typer.Context,
    localai: Annotated[
        bool,
        typer.Option(
            "--localai", help="LocalAI's public gallery, with the signature policy LocalAI publishes."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a commented starter config to --config FILE (default ./gallery.yaml); never over an
    existing file unless --force. Check it with 'gallery doctor'."""
    out = output_for(ctx, False)
    target = ctx.obj.config_path or Path("gallery.yaml")
    with reported_errors(ctx, out):
        written = gallery.write_starter(target, localai=localai, force=force)
    hint = "" if localai else ": rename the example gallery and set its url and verification"
    out.out.print(f"wrote {written}{hint}; then run 'gallery --config {written} doctor'", highlight=False)
