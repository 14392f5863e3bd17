"""Which nodes a job runs on (pure): names and globs matched against accepted nodes,
and ``label:KEY=GLOB`` / ``fact:KEY=GLOB`` selectors matched against their labels and
facts, which the caller passes in as data.  A fact is compared as a string, never
interpreted (``match_values``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from director.errors import DirectorError

SELECTORS = ("label:", "fact:")
NodeAttrs = Mapping[str, Mapping[str, Any]]   # name -> {"labels": {...}, "facts": {...}}


def is_selector(pattern: str) -> bool:
    return pattern.startswith(SELECTORS)


def _selector(pattern: str) -> tuple[str, str, str]:
    kind, _, rest = pattern.partition(":")
    key, sep, glob = rest.partition("=")
    if not sep or not key:
        raise DirectorError(f"bad target '{pattern}': write {kind}:KEY=VALUE (the value"
                            " may be a glob)")
    return kind, key, glob


def _selects(kind: str, key: str, glob: str, attrs: Mapping[str, Any] | None) -> bool:
    if not attrs:
        return False
    if kind == "label":
        labels = attrs.get("labels") or {}
        value = labels.get(key) if isinstance(labels, Mapping) else None
        return isinstance(value, str) and fnmatch.fnmatchcase(value, glob)
    facts = attrs.get("facts") or {}
    if not isinstance(facts, dict):
        return False
    return any(fnmatch.fnmatchcase(v, glob) for v in match_values(facts, key))


def match_targets(patterns: Sequence[str], accepted: Iterable[str],
                  online: Iterable[str], allow_offline: bool = False,
                  attrs: NodeAttrs | None = None) -> list[str]:
    """Names ``patterns`` select; no patterns means every online node.

    A pattern that matches no accepted node is an error, and so is one that selects
    a node not online (unless ``allow_offline``: its tasks then wait for it), so a
    typo or a dead machine never silently runs a deployment on fewer machines than
    meant, nor leaves it waiting unseen.  ``attrs`` holds each node's labels and
    facts for the selectors (a node missing there has none).
    """
    accepted = sorted(set(accepted))
    if not patterns:
        chosen = sorted(set(online) & set(accepted))
        if not chosen:
            raise DirectorError("no online nodes to run on (see: director nodes)")
        return chosen
    chosen_set: set[str] = set()
    attrs = attrs or {}
    for pat in patterns:
        if is_selector(pat):
            kind, key, glob = _selector(pat)
            hits = [n for n in accepted if _selects(kind, key, glob, attrs.get(n))]
        else:
            hits = [n for n in accepted if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise DirectorError(f"unknown target '{pat}': no accepted node matches"
                                " (see: director nodes)")
        chosen_set.update(hits)
    away = sorted(chosen_set - set(online))
    if away and not allow_offline:
        shown = ", ".join(away[:10]) + (f" (+{len(away) - 10} more)" if len(away) > 10 else "")
        raise DirectorError(f"not online: {shown}; run when they are back, or pass"
                            " --allow-offline to queue the work for them")
    return sorted(chosen_set)


def match_values(facts: dict[str, Any], key: str) -> list[str]:
    """The strings ``fact:KEY=GLOB`` is matched against, from a facts document (the
    ``protocol.facts.Facts.to_dict`` form): a list fact gives each item, ``os`` its
    "id version" and its id, ``os.id`` / ``os.version`` the parts, numbers their
    decimal text."""
    if key in ("os.id", "os.version"):
        os_doc = facts.get("os")
        value = os_doc.get(key[3:]) if isinstance(os_doc, dict) else None
        return [value] if isinstance(value, str) else []
    value = facts.get(key)
    if key == "os" and isinstance(value, dict):
        parts = [p for p in (value.get("id"), value.get("version")) if isinstance(p, str)]
        out = [" ".join(parts)] if parts else []
        if isinstance(value.get("id"), str) and len(parts) > 1:
            out.append(value["id"])
        return out
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return []
    return [str(value)]
