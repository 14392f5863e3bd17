"""The agent's process driver (client/runner.py) with real /bin/sh processes.

Which job runs when is the core's (test_agent_core); this checks what the driver
itself owns: a RUN's output, exit code and timeout come back as an Outcome from
its watched fds, verbs without a process end inside ``start``, and stopping
leaves no process behind.
"""

from __future__ import annotations

import os
import time

import pytest

from director.jobs.nodestate import JobCache, NodeState
from director.client.runner import ProcessDriver, SelectorWatcher
from director.jobs.dsl import parse_line
from director.protocol import messages as M
from procs import live_in_group


@pytest.fixture
def driver(tmp_path):
    watcher = SelectorWatcher()
    cache = JobCache(tmp_path / "jobcache.db")
    d = ProcessDriver(NodeState(tmp_path), cache, watcher)
    yield d
    d.close()
    cache.close()
    watcher.close()


def job(n: int, line: str) -> M.Job:
    return M.Job(f"{n:08x}", parse_line(line), "aaaaaaaa.0", n)


def wait_ended(d: ProcessDriver, count: int = 1, timeout: float = 10.0) -> dict:
    """Turn the driver's loop (fds, then deadlines) until ``count`` jobs ended."""
    ended: dict = {}
    d.release()  # the agent's loop does this once the spawned jobs' pids are journaled
    deadline = time.monotonic() + timeout
    while len(ended) < count and time.monotonic() < deadline:
        left = max(0.0, min(0.05, d.next_deadline() - time.monotonic()))
        ended.update(d.handle(d.watcher.poll(left)))
        ended.update(d.tick(time.monotonic()))
    return ended


def test_run_reports_output_and_exit_code(driver):
    assert driver.start(job(1, "RUN echo out; echo err >&2; exit 3")) is None
    (out,) = wait_ended(driver).values()
    assert out.status == "failed" and out.rc == 3
    assert out.stdout == "out\n" and out.stderr == "err\n"
    assert driver.running == [] and driver.procs == {}


def test_a_spawned_job_runs_nothing_until_released(driver, tmp_path):
    mark = tmp_path / "ran"
    assert driver.start(job(1, f"RUN touch {mark}")) is None
    time.sleep(0.3)
    assert not mark.exists() and driver.gated
    assert wait_ended(driver)["00000001"].status == "success" and mark.exists()


def test_a_gated_job_whose_agent_died_exits_having_run_nothing(driver, tmp_path):
    mark = tmp_path / "ran"
    driver.start(job(1, f'RUN ["touch", "{mark}"]'))
    proc = driver.gated.pop()
    os.close(proc.gate)  # the agent's end of the gate is gone, as when it is killed
    proc.gate = None
    out = wait_ended(driver)["00000001"]
    assert out.status == "failed" and out.rc == 125 and not mark.exists()


def test_a_job_gets_only_its_three_descriptors_its_directory_and_its_own_arguments(tmp_path):
    """Jobs start with posix_spawn, which closes nothing by itself: every descriptor
    the agent holds (here a CURVE-less ZeroMQ socket, the SQLite job cache, a pipe)
    must be close-on-exec, and the gate's directory argument must not show."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.bind("tcp://127.0.0.1:*")
    r, w = os.pipe()  # Python's own pipes are close-on-exec too (PEP 446)
    os.set_inheritable(w, True)  # as if the agent's own parent had leaked it
    watcher = SelectorWatcher()
    cache = JobCache(tmp_path / "jobcache.db")
    driver = ProcessDriver(NodeState(tmp_path), cache, watcher)
    try:
        work = tmp_path / "work dir"
        work.mkdir()
        driver.state.update(workdir=str(work))
        probe = ("import os\\nfor fd in range(4096):\\n try: os.fstat(fd)\\n"
                 " except OSError: continue\\n print(fd)")
        driver.start(job(1, f'RUN python3 -c "$(printf \'{probe}\')"; pwd; echo "$#"'))
        out = wait_ended(driver)["00000001"]
        assert out.status == "success", out
        assert out.stdout.splitlines() == ["0", "1", "2", str(work), "0"]
        driver.start(job(2, 'RUN ["sh", "-c", "echo $# $0", "zero"]'))
        assert wait_ended(driver)["00000002"].stdout == "0 zero\n"
    finally:
        driver.close()
        cache.close()
        watcher.close()
        os.close(r)
        os.close(w)
        sock.close(0)
        ctx.term()


def test_a_success_is_cached_and_answered_from_the_cache_without_a_process(driver):
    assert driver.start(job(1, "RUN echo once")) is None
    assert wait_ended(driver)["00000001"].status == "success"
    hit = driver.start(job(2, "RUN echo once"))
    assert hit is not None and hit.cached and hit.stdout == "once\n"


def test_arg_ends_inside_start_and_reaches_later_runs(driver):
    out = driver.start(job(1, "ARG greeting=hello"))
    assert out is not None and out.status == "success"
    driver.start(job(2, "RUN echo ${greeting}"))
    assert wait_ended(driver)["00000002"].stdout == "hello\n"


def test_timeout_kills_the_process_group(driver):
    driver.start(job(1, "RUN --timeout 0.3 sleep 30 & sleep 30"))
    pgid = driver.running[0].proc.pid
    out = wait_ended(driver)["00000001"]
    assert out.status == "timeout"
    for _ in range(100):  # SIGKILL reaches the group's members asynchronously
        if not live_in_group(pgid):
            break
        time.sleep(0.02)
    assert not live_in_group(pgid)


def test_close_leaves_no_job_process_behind(driver):
    driver.start(job(1, "RUN sleep 30"))
    pgid = driver.running[0].proc.pid
    driver.close()
    assert not live_in_group(pgid) and driver.running == []
