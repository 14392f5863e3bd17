"""Operator labels on nodes: the rules for their keys, values and count (pure).

The CLI checks them before sending anything and the server checks them again
(a control request is input too), so bad input is one clear line and nothing
is written.  Values have no glob characters, commas or spaces, so
``--target label:KEY=GLOB`` (comma lists allowed) reads one way only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from director.errors import DirectorError

MAX_LABELS = 32       # labels on one node
MAX_KEY = 63
MAX_VALUE = 128
KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,%d}" % MAX_KEY)
VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@+-]{0,%d}" % MAX_VALUE)


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise DirectorError(f"bad label key {_shown(key)}: use 1 to {MAX_KEY} of"
                            " A-Z a-z 0-9 _ . -")
    return key


def check_value(key: str, value: Any) -> str:
    if not isinstance(value, str) or not VALUE_RE.fullmatch(value):
        raise DirectorError(f"bad value for label {key}: {_shown(value)}; use at most {MAX_VALUE}"
                            " of A-Z a-z 0-9 _ . : / @ + -")
    return value


def parse_assignments(words: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` words -> {KEY: VALUE}; a key given twice is an error."""
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise DirectorError(f"expected KEY=VALUE, got {_shown(word)}")
        check_key(key)
        if key in out:
            raise DirectorError(f"label {key} given twice")
        out[key] = check_value(key, value)
    return out


def change(current: Mapping[str, str], set_: Any, remove: Any) -> dict[str, str]:
    """The labels after setting ``set_`` ({KEY: VALUE}) and removing ``remove`` (keys):
    DirectorError if either is malformed, they overlap, nothing is asked, or the node
    would hold more than MAX_LABELS.  Removing a label the node lacks is no error."""
    if not isinstance(set_, dict) or not isinstance(remove, list):
        raise DirectorError("malformed label request")
    if len(set_) > MAX_LABELS or len(remove) > MAX_LABELS:
        raise DirectorError(f"too many labels in one request (at most {MAX_LABELS})")
    for key, value in set_.items():
        check_value(check_key(key), value)
    gone = {check_key(k) for k in remove}
    both = sorted(gone & set(set_))
    if both:
        raise DirectorError(f"label {both[0]} is both set and removed")
    if not set_ and not gone:
        raise DirectorError("nothing to change: give KEY=VALUE or --remove KEY")
    out = {k: v for k, v in current.items() if k not in gone}
    out.update(set_)
    if len(out) > MAX_LABELS:
        raise DirectorError(f"a node holds at most {MAX_LABELS} labels ({len(out)} asked)")
    return dict(sorted(out.items()))


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
