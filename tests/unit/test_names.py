"""Node name rules: what is accepted, what is refused, and why."""

from __future__ import annotations

import pytest

from director.errors import DirectorError, NameError_
from director.trust.names import NAME_RE, name_from_hostname, validate_name

VALID = ["a", "A", "0", "_", "web-1", "web_1", "web.example", "node.01-b_c", "x" * 64, "9lives", "_x."]
INVALID = [
    ("", "empty"),
    ("x" * 65, "65"),
    (".hidden", "start with '.'"),
    ("-rf", "start with '-'"),
    ("a b", "' '"),
    ("a/b", "'/'"),
    ("a:b", "':'"),
    ("café", "'é'"),
    ("a\n", "'\\n'"),
    ("..", "start with '.'"),
    ("a*", "'*'"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name
    assert NAME_RE.fullmatch(name)


@pytest.mark.parametrize(("name", "fragment"), INVALID)
def test_invalid_names_raise_with_reason(name: str, fragment: str) -> None:
    with pytest.raises(NameError_) as info:
        validate_name(name)
    assert fragment in str(info.value)
    assert isinstance(info.value, DirectorError)
    assert not NAME_RE.fullmatch(name)


def test_non_string_is_refused() -> None:
    with pytest.raises(NameError_, match="text"):
        validate_name(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("web1.example.com", "web1"),
        ("my host", "my-host"),
        ("-lead", "lead"),
        ("ünï", "n-"),
        ("", "node"),
        ("x" * 80, "x" * 64),
    ],
)
def test_name_from_hostname_is_always_valid(host: str, expected: str) -> None:
    name = name_from_hostname(host)
    assert name == expected
    assert validate_name(name) == name
