"""Which nodes a job runs on: names and globs matched against accepted nodes (pure)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from director.errors import DirectorError


def match_targets(patterns: Sequence[str], accepted: Iterable[str],
                  online: Iterable[str], allow_offline: bool = False) -> list[str]:
    """Names ``patterns`` select; no patterns means every online node.

    A pattern that matches no accepted node is an error, and so is one that selects
    a node not online (unless ``allow_offline``: its tasks then wait for it), so a
    typo or a dead machine never silently runs a deployment on fewer machines than
    meant, nor leaves it waiting unseen.
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
    away = sorted(chosen_set - set(online))
    if away and not allow_offline:
        shown = ", ".join(away[:10]) + (f" (+{len(away) - 10} more)" if len(away) > 10 else "")
        raise DirectorError(f"not online: {shown}; run when they are back, or pass"
                            " --allow-offline to queue the work for them")
    return sorted(chosen_set)
