"""Process checks the tests share: is a job's process really gone?

A killed process can linger as a zombie until its parent (or init) reaps it, so
"gone" means: no such pid, or only a zombie is left.
"""

from __future__ import annotations

import os
from pathlib import Path


def _state_and_group(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) from /proc, or None if ``pid`` does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def gone(pid: int) -> bool:
    """True if ``pid`` no longer exists (or is a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    info = _state_and_group(pid)
    return info is None or info[0] == "Z"


def live_in_group(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies."""
    live = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _state_and_group(int(entry))
            if info is not None and info[1] == pgid and info[0] != "Z":
                live.append(int(entry))
    return live
