"""Result rows as the store keeps them, and the words the server uses when *it*
ends a task (so a node's own word can later be told apart from them)."""

from __future__ import annotations

from typing import Any

from director.protocol.frames import dumps
from director.protocol.messages import Result
from director.server.scheduler import Task

MAX_OUT = 1024 * 1024   # characters of stdout / stderr stored per task
NODE_WENT_AWAY = "the node went away"
NO_ANSWER = "no answer from the node"
SERVER_RESTARTED = "the server restarted during the transfer"
SERVER_LOST = frozenset({NODE_WENT_AWAY, NO_ANSWER, SERVER_RESTARTED})  # not the node's word


RESULT_COLUMNS = ("status", "rc", "stdout", "stderr", "cached", "exec_time", "roundtrip_time",
                  "transfer", "error", "sent", "finished")
UPDATE_BY_KEY = (f"UPDATE results SET {','.join(f'{c}=?' for c in RESULT_COLUMNS)}"
                 " WHERE job_id=? AND node=?")
# by rowid: no seek in the (job_id, node) index, whose pages a big run does not keep
# cached (job and node are checked too: a row that is not there is found by them)
UPDATE_BY_ROWID = UPDATE_BY_KEY.replace("WHERE job_id=?", "WHERE rowid=? AND job_id=?")


def columns(r: dict[str, Any]) -> tuple:
    """A row's RESULT_COLUMNS, positionally (binding a dozen names costs more)."""
    return (r["status"], r["rc"], r["stdout"], r["stderr"], r["cached"], r["exec_time"],
            r["roundtrip_time"], r["transfer"], r["error"], r["sent"], r["finished"])


def blank(task: Task) -> dict[str, Any]:
    """A task's row before anything is known of its outcome."""
    return {"job_id": task.job_id, "node": task.node, "status": task.status, "rc": None,
            "stdout": "", "stderr": "", "cached": 0, "exec_time": None,
            "roundtrip_time": None, "transfer": None, "error": "", "sent": task.sent_at,
            "finished": None, "row": task.row}


def result_fields(msg: Result, roundtrip: float | None) -> dict[str, Any]:
    """The columns a node's result sets (text capped for storage)."""
    return {
        "status": msg.status, "rc": msg.rc, "stdout": cap(msg.stdout),
        "stderr": cap(msg.stderr), "cached": int(msg.cached),
        "exec_time": msg.exec_time, "error": cap(msg.error, 4096),
        "roundtrip_time": roundtrip,
        "transfer": dumps(msg.transfer.to_dict()) if msg.transfer is not None else None,
    }


def cap(text: str, limit: int = MAX_OUT) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... truncated by server]"
