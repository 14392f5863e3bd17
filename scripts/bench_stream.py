"""The --stream benchmark (issue 13): what following the output costs a job.

Six local clients each run a job writing 1,000 lines a second for a few seconds; the
same job runs with ``exec --wait`` and with ``exec --stream`` (its lines read and
dropped by the benchmark), alternating, best of each kept.  Target: streaming slows
the job by at most 10 %.  Imported by scripts/bench.py (``--only stream``).
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

SECONDS = 3
WRITER = ("RUN --skip-cache python3 -c 'import time; [(print(\"line\", i, flush=True),"
          " time.sleep(0.001)) for i in range({n})]'")


def bench_stream(sec: Any, quick: bool, mesh_class: Any, row_class: Any, director: list[str],
                 env: dict[str, str], error: type[Exception] = RuntimeError) -> None:
    nodes = 6
    n = 1000 * (1 if quick else SECONDS)
    sec.title = f"Streaming: {nodes} nodes each writing ~1,000 lines/s for {n // 1000} s (issue 13)"
    line = WRITER.format(n=n)
    with mesh_class(nodes) as mesh:
        waits, streams, lines_seen = [], [], 0
        for _ in range(2 if quick else 3):
            t0 = time.monotonic()
            mesh.cli("exec", "--wait", line, timeout=120)
            waits.append(time.monotonic() - t0)
            t0 = time.monotonic()
            p = subprocess.run([*director, "--home", mesh.home(), "exec", "--stream", line],
                               capture_output=True, text=True, timeout=120, env=env,
                               stdin=subprocess.DEVNULL)
            streams.append(time.monotonic() - t0)
            if p.returncode != 0:
                raise error(f"exec --stream exited {p.returncode}: {p.stderr[-300:]}")
            lines_seen = sum(1 for ln in p.stdout.splitlines() if ": line " in ln)
    best_wait, best_stream = min(waits), min(streams)
    ratio = best_stream / best_wait
    sec.rows.append(row_class(
        "exec --stream beside exec --wait (same job)", f"{best_stream:.2f} s",
        f"{best_wait:.2f} s", f"{ratio:.2f}×", "≤ 1.10×", ratio <= 1.10,
        f"{lines_seen:,} of {nodes * n:,} lines shown live (before the results); runs:"
        f" wait {', '.join(f'{w:.2f}' for w in waits)} s, stream"
        f" {', '.join(f'{s:.2f}' for s in streams)} s"))
