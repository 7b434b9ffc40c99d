from __future__ import annotations

import time

import pytest

from gallery.config.safe_yaml import YamlLimits, YamlRefused, load_bounded_yaml

BILLION_LAUGHS = b"""
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_before_construction() -> None:
    started = time.monotonic()
    with pytest.raises(YamlRefused, match="expands to more than"):
        load_bounded_yaml(BILLION_LAUGHS, YamlLimits())
    # Reported, not asserted (no timing assertions in tests): it is refused in milliseconds.
    print(f"billion laughs refused in {time.monotonic() - started:.4f}s")


def test_merge_keys_and_anchors_within_limits() -> None:
    data = load_bounded_yaml(b"- &x {a: 1, b: [1, 2]}\n- !!merge <<: *x\n  a: 2\n- <<: *x\n", YamlLimits())
    assert data == [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [1, 2]}, {"a": 1, "b": [1, 2]}]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"[" * 200 + b"]" * 200, "nesting deeper"),
        (b"a: 1\n---\nb: 2\n", "several YAML documents"),
        (b"!!python/object/apply:os.system ['true']\n", "YAML error"),
        (b"a: *missing\n", "unknown anchor"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"a: [1, 2\n", "YAML error at line"),
        (b"x" * 2048, "over the limit"),
    ],
)
def test_refusals(document: bytes, reason: str) -> None:
    with pytest.raises(YamlRefused, match=reason):
        load_bounded_yaml(document, YamlLimits(max_bytes=1024))


def test_node_limit_counts_plain_documents_too() -> None:
    with pytest.raises(YamlRefused):
        load_bounded_yaml(b"[" + b"1," * 200 + b"1]", YamlLimits(max_nodes=100))
    assert load_bounded_yaml(b"", YamlLimits()) is None
