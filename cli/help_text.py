"""``gallery --help``, rendered ahead of time: typer alone takes longer to import than the help
may take to appear (bench/operator.py). Generated from the real app by
``.venv/bin/python -m cli.help_text``; tests/test_cli_globals.py fails when it differs from what
typer renders now, so it cannot drift. Subcommands' ``--help`` still go through typer.
"""

from __future__ import annotations

TOP_LEVEL_HELP = """\
Usage: gallery [OPTIONS] COMMAND [ARGS]...

  Install backends from signed galleries: pinned by digest, verified, swapped
  atomically.

Options:
  -c, --config FILE               Gallery config (YAML). Default:
                                  ./gallery.yaml, then
                                  /etc/gallery/gallery.yaml.
  -q, --quiet                     Only errors and results: no progress,
                                  notices or warnings.
  -v, --verbose                   Log every HTTP request (method, URL, status)
                                  to stderr.
  --no-color                      Plain text, no colours or styles.
  --debug                         Show tracebacks (implies --verbose).
  --require-integrity / --no-require-integrity
                                  Strict mode: refuse anything that cannot be
                                  verified (overrides the config).
  --capability KEY                Capability key for meta-backends (overrides
                                  the config).
  --version                       Print the version.
  --help                          Show this message and exit.

Commands:
  lint           Check a gallery index before publishing it: every entry...
  verify-bundle  Check one Sigstore bundle offline, with the installer's...
  checksum       Check or fill in tarball sha256s (and with --pin, pin...
  init           Write a commented starter config to --config FILE...
  install        Install backends: pinned by digest, verified under the...
  upgrade        Upgrade installed backends to what their gallery offers...
  rollback       Put back the previous version of NAME (the newest kept...
  uninstall      Remove installed backends (a meta-backend takes its...
  adopt          Take over backends LocalAI installed (or someone...
  export         Write pinned, verified backends with their signatures...
  verify         Re-check installed backends against the current policy,...
  lock           Pin and verify backends and write a lock file for...
  preload        Make these backends present on this worker: exactly the...
  list           List the entries of every configured gallery (or, with...
  show           Show how NAME resolves: meta-backend choice, candidates...
  doctor         Check the config, trust roots, directories, capability...
  schema         Print the JSON Schema of a file format (always JSON), or...
  fsck           Check installed backends against their recorded files,...
  cache          The blob cache.

  Exit codes: 0 success; 1 operational failure (network, disk, a backend
  failed); 2 usage, config or index error; 3 integrity refusal (signature,
  digest, strict mode); 130 interrupted (Ctrl-C).
"""


def render() -> str:
    """What typer prints for ``gallery --help`` on a pipe (click's 80-column layout)."""
    import subprocess
    import sys

    code = "from cli.main import app; app(['--help'], prog_name='gallery')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout  # noqa: S603


if __name__ == "__main__":
    import pathlib

    path = pathlib.Path(__file__)
    source = path.read_text()
    start = source.index("TOP_LEVEL_HELP = ")
    quoted = source.startswith('TOP_LEVEL_HELP = """', start)
    end = source.index('"""', start + 20) + 3 if quoted else source.index("\n", start)
    text = render()
    if '"""' in text or "\\" in text:
        raise SystemExit("the help text cannot be written as a plain triple-quoted string")
    path.write_text(source[:start] + 'TOP_LEVEL_HELP = """\\\n' + text + '"""' + source[end:])
