"""Which nodes a job runs on: names and globs matched against accepted nodes (pure)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from director.errors import DirectorError


def match_targets(patterns: Sequence[str], accepted: Iterable[str],
                  online: Iterable[str]) -> list[str]:
    """Names ``patterns`` select; no patterns means every online node.

    A pattern that matches no accepted node is an error, so a typo never
    silently runs a deployment on fewer machines than meant.
    """
    accepted = sorted(set(accepted))
    if not patterns:
        chosen = sorted(set(online) & set(accepted))
        if not chosen:
            raise DirectorError("no online nodes to run on (see: director nodes)")
        return chosen
    chosen_set: set[str] = set()
    for pat in patterns:
        hits = [n for n in accepted if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise DirectorError(f"unknown target '{pat}': no accepted node matches"
                                " (see: director nodes)")
        chosen_set.update(hits)
    return sorted(chosen_set)
