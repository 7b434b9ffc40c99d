"""Property-based tests (hypothesis): path sanitising in extraction and policy regex anchoring.

Reference parsing and normalisation have theirs in test_references.py.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gallery.errors import UnsafeArchiveError
from gallery.place.extract import ExtractLimits, TreeBuilder
from gallery.verify.policy import VerificationPolicy

from .tarbuild import Member, tar_bytes

LIMITS = ExtractLimits(max_bytes=1 << 20, max_files=200, max_path_length=512)

# Path segments that matter to a sanitiser: ordinary names, ".", "..", empty (doubled slashes),
# whiteout prefixes, and the bait directory's own name.
SEGMENT = st.sampled_from(["a", "b", "c", ".", "..", "", ".wh.a", ".wh..wh..opq", "bait", "victim"])
NAME = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.booleans(),
    st.lists(SEGMENT, min_size=1, max_size=5),
)
TARGET = st.one_of(NAME, st.just("BAIT"), st.just("BAIT/victim"), st.just("../../bait"))


@st.composite
def members(draw: st.DrawFn) -> Member:
    kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink"]))
    name = draw(NAME)
    if kind == "file":
        return Member(name, b"pwned")
    if kind == "dir":
        return Member(name, type=tarfile.DIRTYPE, mode=0o755)
    return Member(name, type=tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE, linkname=draw(TARGET))


def _state(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (
            p.lstat().st_mode,
            p.read_bytes() if p.is_file() and not p.is_symlink() else b"",
        )
        for p in sorted(root.rglob("*"))
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.lists(st.lists(members(), min_size=1, max_size=8), min_size=1, max_size=3))
def test_extraction_never_touches_anything_outside_staging(layers: list[list[Member]]) -> None:
    with tempfile.TemporaryDirectory() as name:
        top = Path(name)
        bait = top / "bait"
        bait.mkdir()
        (bait / "victim").write_text("untouched")
        staging = top / "staging"
        staging.mkdir()
        before = _state(bait)
        builder = TreeBuilder(staging, LIMITS)
        try:
            for number, layer in enumerate(layers):
                resolved = [
                    Member(m.name, m.data, m.type, m.mode, m.linkname.replace("BAIT", str(bait)))
                    for m in layer
                ]
                builder.apply_layer(io.BytesIO(tar_bytes(resolved)), layer=f"layer{number}")
            builder.finish()
        except UnsafeArchiveError:
            pass  # refusing is always allowed; what follows must hold either way
        assert _state(bait) == before
        assert sorted(p.name for p in top.iterdir()) == ["bait", "staging"]
        for path in staging.rglob("*"):
            # Every real (non-symlink) entry lives inside staging, whatever route reached it.
            if not path.is_symlink():
                assert path.resolve().is_relative_to(staging.resolve())


IDENTITY = st.text(st.sampled_from("abcxyz/:.@-_ADFhtps0123\n"), min_size=1, max_size=30).filter(
    lambda s: s.strip() != ""
)
ISSUER = "https://token.actions.githubusercontent.com"


@given(identity=IDENTITY, other=IDENTITY)
def test_an_exact_identity_matches_only_itself(identity: str, other: str) -> None:
    policy = VerificationPolicy(issuer=ISSUER, identity=identity)
    assert policy.matches_identity(other) == (other == identity)
    assert policy.matches_identity(identity)


@given(a=IDENTITY, b=IDENTITY, junk=IDENTITY)
def test_a_regex_alternation_is_anchored_as_a_whole(a: str, b: str, junk: str) -> None:
    """The classic mistake is ``^a|b$``: ``a`` anchored only at the start, ``b`` only at the end."""
    policy = VerificationPolicy(issuer=ISSUER, identity_regex=f"{re.escape(a)}|{re.escape(b)}")
    assert policy.matches_identity(a) and policy.matches_identity(b)
    for candidate in (a + junk, junk + b, junk + a, b + junk):
        assert policy.matches_identity(candidate) == (candidate in (a, b))


@given(org=IDENTITY, prefix=IDENTITY, rest=IDENTITY)
def test_a_prefix_regex_never_matches_in_the_middle(org: str, prefix: str, rest: str) -> None:
    """``https://github.com/org/.*`` must not accept ``https://evil/https://github.com/org/x``."""
    pattern = re.escape(f"https://github.com/{org}/") + ".*"
    policy = VerificationPolicy(issuer_regex=re.escape(ISSUER), identity_regex=pattern)
    inside = f"https://github.com/{org}/{rest}"
    assert policy.matches_identity(inside) == ("\n" not in rest)  # "." stops at a newline
    assert not policy.matches_identity(prefix + inside) or (prefix + inside).startswith(
        f"https://github.com/{org}/"
    )
    assert policy.matches_issuer(ISSUER)
    assert not policy.matches_issuer(ISSUER + rest) and not policy.matches_issuer(prefix + ISSUER)
