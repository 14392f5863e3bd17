#!/usr/bin/env python3
"""Director benchmarks beside the raw limits of this machine, measured in the same run.

    .venv/bin/python scripts/bench.py [--quick] [--only jobs|latency|transfer|stream|scale]
        [--scale-nodes N]

Prints a table and writes BENCHMARKS.md (only the sections of the benchmarks that ran are
replaced; the others are kept).  Everything runs on 127.0.0.1 with real processes: a
``director server`` and ``director client`` processes in throw-away homes under /tmp
(short paths: the control socket is an ipc:// path), enrolled by a join token, driven by
the ``director`` CLI exactly as an operator would.  Every raw limit is plain pyzmq CURVE
between processes this script starts.  Every loop is bounded in count and time, and every
process is stopped in a ``finally`` (SIGTERM, then SIGKILL of its process group).

Benchmarks:
  jobs      issue 3: 1000 ``RUN --skip-cache echo hello world`` on each of 6 clients,
            linear (Directorfile) and async (YAML), beside ROUTER/DEALER+subprocess.
  latency   issue 3: ``exec --wait 'RUN --skip-cache true'`` CLI wall time, and the mesh
            round trip through the control socket without CLI start-up, beside a bare spawn.
  transfer  issue 4: COPY of 1 GiB to 1 and 6 nodes beside a raw CURVE chunk stream,
            no-change redeploy of a 1,000-file tree, 100-byte delta, server peak RSS.
  scale     issue 12 (only with --only scale): one server and --scale-nodes N simulated
            nodes (scripts/simnodes.py): time to all online, idle CPU, RSS, fan-out,
            a 100-job orchestration on every node, longest loop iteration, tasks lost.

Internal modes (the raw-limit processes) are ``bench.py _raw-...``; they are not for users.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DIRECTOR = [str(BIN / "director")] if (BIN / "director").exists() else [sys.executable, "-m",
                                                                          "director"]
DATA = Path("/tmp/dbench-data")      # big random inputs, created once and reused
GiB = 1024 ** 3
MiB = 1024 ** 2
CHUNK = MiB
WINDOW = 8
STOP_GRACE = 5.0
MIN_FREE_FOR_TRANSFER = 15 * GiB
ECHO = "echo hello world"

_LIVE: list[subprocess.Popen] = []   # every long-running process this script started


# ----------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------
def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRECTOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(argv: list[str], log: Path | None = None, stdout: Any = subprocess.DEVNULL
          ) -> subprocess.Popen:
    """Start a long-running process in its own session, registered for cleanup."""
    err = open(log, "w") if log else subprocess.DEVNULL
    try:
        p = subprocess.Popen(argv, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL,
                             env=clean_env(), start_new_session=True)
    finally:
        if log:
            err.close()
    _LIVE.append(p)
    return p


def stop(procs: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM every process, wait up to ``grace`` s in total, then SIGKILL its group."""
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                print(f"bench: warning: pid {p.pid} did not die", file=sys.stderr)
    for p in procs:
        if p in _LIVE and p.poll() is not None:
            _LIVE.remove(p)
        if p.stdout:
            p.stdout.close()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """user+system CPU seconds of a live process (0 if it is gone); with ``children``,
    plus what its reaped children (the jobs' /bin/sh) used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------------------------
# a local Director mesh
# ----------------------------------------------------------------------------------------
class Mesh:
    """A server and N clients, each with its own short home under /tmp, on loopback."""

    def __init__(self, nclients: int, heartbeat: float = 1.0):
        self.root = Path(tempfile.mkdtemp(prefix="db", dir="/tmp"))
        self.port = free_port()
        self.heartbeat = heartbeat
        self.names = [f"n{i}" for i in range(1, nclients + 1)]
        self.procs: dict[str, subprocess.Popen] = {}

    def home(self, name: str = "server") -> str:
        return str(self.root / name)

    def cli(self, *args: str, home: str = "server", timeout: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess:
        argv = [*DIRECTOR, "--home", self.home(home), *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               env=clean_env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BenchError(f"'director {' '.join(args)[:80]}' took over {timeout:g} s") from None
        if check and p.returncode != 0:
            raise BenchError(f"'director {' '.join(args)[:80]}' exited {p.returncode}: "
                             f"{p.stderr.strip()[-500:]}")
        return p

    def _start(self, name: str, *args: str) -> None:
        self.procs[name] = spawn([*DIRECTOR, "--home", self.home(name), "--heartbeat-interval",
                                  str(self.heartbeat), *args], log=self.root / f"{name}.log")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise BenchError(f"{name} exited with {p.returncode} while waiting for "
                                     f"{what}: {self.log_tail(name)}")
            if check():
                return
            time.sleep(0.1)
        raise BenchError(f"{what} did not happen within {timeout:g} s (logs in {self.root})")

    def log_tail(self, name: str, n: int = 600) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self) -> Mesh:
        self._start("server", "--bind", f"tcp://127.0.0.1:{self.port}", "server")
        self.wait_for("server start",
                      lambda: self.cli("health", check=False, timeout=10).returncode == 0)
        tok = json.loads(self.cli("token", "create", "--uses", str(len(self.names)), "--ttl",
                                  "10m", "--address", f"127.0.0.1:{self.port}",
                                  "--json").stdout)
        for name in self.names:
            self.cli("--name", name, "enroll", "--server", f"127.0.0.1:{self.port}",
                     "--token", tok["token"], home=name)
            self._start(name, "client")

        # Each client's own health says "serving" once the server answered its HELLO on
        # the client's connection.  The server's `nodes` list alone is not enough: it shows a
        # node online from its `enroll` connection before the client has even started.
        from director.net.control import ping

        def all_serving() -> bool:
            return all((ping(self.home(n), timeout=1.0) or {}).get("serving")
                       for n in self.names)

        def all_online() -> bool:
            rows = json.loads(self.cli("nodes", "--json", timeout=10).stdout)
            return sum(r["state"] == "online" for r in rows) == len(self.names)

        self.wait_for(f"{len(self.names)} clients serving", all_serving)
        self.wait_for(f"{len(self.names)} nodes online", all_online)
        # one real job everywhere: every client has said HELLO and runs jobs
        docs = self.exec_json("RUN --skip-cache true", wait_timeout=60)
        bad = {n: (r["status"], r.get("error")) for n, r in docs[0]["results"].items()
               if r["status"] != "success"}
        if bad or len(docs[0]["results"]) != len(self.names):
            raise BenchError(f"warm-up job failed: {bad or docs[0]['results'].keys()}"
                             f" (logs in {self.root})")
        return self

    def exec_json(self, line: str, targets: list[str] | None = None,
                  wait_timeout: float = 600.0) -> list[dict]:
        args = ["exec", "--wait", "--json"]
        for t in targets or []:
            args += ["--target", t]
        p = self.cli(*args, line, timeout=wait_timeout, check=False)
        if p.returncode not in (0, 2) or not p.stdout.strip():
            raise BenchError(f"'exec {line[:60]}' exited {p.returncode}: {p.stderr.strip()[-500:]}")
        return json.loads(p.stdout)

    def pid(self, name: str = "server") -> int:
        return self.procs[name].pid

    def cpu(self, children: bool = False) -> dict[str, float]:
        return {name: cpu_seconds(p.pid, children) for name, p in self.procs.items()}

    def close(self) -> None:
        try:
            stop(list(self.procs.values()))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Mesh:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
class Row:
    def __init__(self, what: str, director: str, raw: str = "", ratio: str = "",
                 target: str = "", ok: bool | None = None, note: str = ""):
        self.what, self.director, self.raw, self.ratio = what, director, raw, ratio
        self.target, self.ok, self.note = target, ok, note

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.ok]


class Section:
    def __init__(self, key: str, title: str):
        self.key, self.title = key, title
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.facts = ""
        self.skipped: str | None = None
        self.seconds = 0.0


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation, of a non-empty list."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms" if x < 0.1 else f"{x * 1000:.0f} ms"


def machine_facts() -> dict[str, str]:
    import zmq

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        dver = version("director")
    except Exception:  # noqa: BLE001
        dver = "?"
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu or platform.processor() or "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "director": dver,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def facts_line(f: dict[str, str]) -> str:
    return (f"{f['date']} · nproc {f['nproc']} ({f['cpu']}) · Linux {f['kernel']} · "
            f"Python {f['python']} · pyzmq {f['pyzmq']} / libzmq {f['libzmq']} · "
            f"director {f['director']} · load avg at start {f['load']}")


# ----------------------------------------------------------------------------------------
# raw limit: jobs (ROUTER/DEALER with CURVE + subprocess in N worker processes)
# ----------------------------------------------------------------------------------------
def _raw_jobs_server(port: int, nworkers: int, njobs: int, pub: bytes, sec: bytes) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    s.sndhwm = s.rcvhwm = 0
    s.curve_server = True
    s.curve_publickey, s.curve_secretkey = pub, sec
    s.bind(f"tcp://127.0.0.1:{port}")
    workers: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(workers) < nworkers:
        if time.monotonic() > deadline or not s.poll(1000):
            if time.monotonic() > deadline:
                raise SystemExit("raw server: workers did not connect")
            continue
        rid, kind, *_ = s.recv_multipart()
        if kind == b"READY":
            workers.append(rid)
    job = ECHO.encode()
    out: dict[str, float] = {}
    for mode in ("linear", "pipelined"):
        sent = dict.fromkeys(workers, 0)
        got = 0
        t0 = time.perf_counter()
        for w in workers:
            for _ in range(njobs if mode == "pipelined" else 1):
                s.send_multipart([w, b"JOB", str(sent[w]).encode(), job])
                sent[w] += 1
        deadline = time.monotonic() + 300
        while got < nworkers * njobs:
            if not s.poll(1000):
                if time.monotonic() > deadline:
                    raise SystemExit(f"raw server: {mode} stalled at {got}")
                continue
            rid, kind, _jid, rc, stdout = s.recv_multipart()
            if kind != b"RES" or rc != b"0" or stdout != b"hello world\n":
                raise SystemExit(f"raw server: bad result {kind!r} {rc!r} {stdout!r}")
            got += 1
            if mode == "linear" and sent[rid] < njobs:
                s.send_multipart([rid, b"JOB", str(sent[rid]).encode(), job])
                sent[rid] += 1
        out[mode] = time.perf_counter() - t0
    for w in workers:
        s.send_multipart([w, b"STOP", b"", b""])
    me = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_server"] = me.ru_utime + me.ru_stime
    out["cpu_workers"] = out["cpu_sh"] = 0.0
    deadline, seen = time.monotonic() + 10, 0
    while seen < nworkers and time.monotonic() < deadline:
        if s.poll(500):
            _rid, kind, *rest = s.recv_multipart()
            if kind == b"CPU":
                own, sh = json.loads(rest[0])
                out["cpu_workers"] += own
                out["cpu_sh"] += sh
                seen += 1
    print(json.dumps(out), flush=True)
    s.close(0)
    ctx.term()


def _raw_jobs_worker(port: int, server_pub: bytes) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 1000
    s.sndhwm = s.rcvhwm = 0
    pub, sec = zmq.curve_keypair()
    s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, server_pub
    s.connect(f"tcp://127.0.0.1:{port}")
    s.send_multipart([b"READY"])
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 120:
        if not s.poll(1000):
            continue
        kind, jid, cmd = s.recv_multipart()
        if kind == b"STOP":
            me = resource.getrusage(resource.RUSAGE_SELF)
            ch = resource.getrusage(resource.RUSAGE_CHILDREN)
            s.send_multipart([b"CPU", json.dumps([me.ru_utime + me.ru_stime,
                                                  ch.ru_utime + ch.ru_stime]).encode()])
            break
        p = subprocess.run(["/bin/sh", "-c", cmd.decode()], capture_output=True)
        s.send_multipart([b"RES", jid, str(p.returncode).encode(), p.stdout])
        idle_since = time.monotonic()
    s.close()
    ctx.term()


def _raw_run(hub: list[str], peers: list[list[str]], timeout: float, what: str,
             settle: float = 0.0) -> dict:
    """Run one raw-limit harness: a hub process of this script that prints its result
    as JSON, and its peers; ``settle`` s are given to the peers to finish after the hub
    answers.  Every process is stopped whatever happens."""
    me = [sys.executable, str(Path(__file__).resolve())]
    hub_p = spawn([*me, *hub], stdout=subprocess.PIPE)
    procs = [hub_p]
    try:
        procs += [spawn([*me, *argv]) for argv in peers]
        try:
            out, _ = hub_p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} took over {timeout:g} s") from None
        if hub_p.returncode != 0 or not out.strip():
            raise BenchError(f"{what}: {hub[0]} failed (exit {hub_p.returncode})")
        deadline = time.monotonic() + settle
        for p in procs[1:]:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return json.loads(out)
    finally:
        stop(procs)


def raw_jobs(nworkers: int, njobs: int) -> dict[str, float]:
    """Wall seconds of each mode, plus ``cpu``: CPU seconds of every raw process (server,
    workers and their /bin/sh children) for both modes together."""
    import zmq

    cpu0 = children_cpu()
    pub, sec = zmq.curve_keypair()
    port = free_port()
    res = _raw_run(["_raw-jobs-server", str(port), str(nworkers), str(njobs), pub.decode(),
                    sec.decode()], [["_raw-jobs-worker", str(port), pub.decode()]] * nworkers,
                   600, "raw jobs benchmark")
    res["cpu"] = children_cpu() - cpu0
    return res


# ----------------------------------------------------------------------------------------
# 1. jobs
# ----------------------------------------------------------------------------------------
def check_docs(docs: list[dict], njobs: int, names: list[str]) -> tuple[int, str]:
    """(successful results, problem or '') of an orchestration's --json output."""
    ok = 0
    problems: dict[str, int] = {}
    if len(docs) != njobs:
        return 0, f"{len(docs)} jobs in the output, expected {njobs}"
    for d in docs:
        for n in names:
            r = d["results"].get(n)
            if r is None:
                problems["missing"] = problems.get("missing", 0) + 1
            elif r["status"] == "success" and r["stdout"] == "hello world\n":
                ok += 1
            else:
                problems[r["status"]] = problems.get(r["status"], 0) + 1
    return ok, ", ".join(f"{v} {k}" for k, v in problems.items())


def bench_jobs(sec: Section, quick: bool) -> None:
    nodes, njobs = 6, (200 if quick else 1000)
    total = nodes * njobs
    sec.title = (f"Jobs: {njobs} × `RUN --skip-cache {ECHO}` on each of {nodes} local clients"
                 " (issue 3)")
    raws: list[dict[str, float]] = []

    def run_raw(when: str) -> None:
        print(f"jobs: raw limit ({when}), {nodes} worker processes × {njobs} execs over "
              "CURVE ...", flush=True)
        r = raw_jobs(nodes, njobs)
        raws.append(r)
        print(f"jobs: raw linear {r['linear']:.2f} s, pipelined {r['pipelined']:.2f} s",
              flush=True)

    run_raw("before Director")
    print(f"jobs: starting a mesh (server + {nodes} clients) ...", flush=True)
    measured: list[tuple[str, float, int, str, dict[str, Any]]] = []
    with Mesh(nodes) as mesh:
        work = mesh.root / "files"
        work.mkdir()
        linear = work / "Directorfile"
        linear.write_text("".join(f"RUN --skip-cache {ECHO}\n" for _ in range(njobs)))
        asyncf = work / "async.yaml"
        asyncf.write_text("".join(f"- async: true\n  jobs:\n    - RUN: --skip-cache {ECHO}\n"
                                  for _ in range(njobs)))
        # Each mode twice, alternating, best kept: the raw limit is also the best of two
        # runs, and these shared VMs swing by 15% from one run to the next.
        runs = 1 if quick else 2
        for label, path in (("linear", linear), ("async", asyncf)) * runs:
            time.sleep(1.0)
            cpu0, cpuc0, cli0 = mesh.cpu(), mesh.cpu(children=True), children_cpu()
            t0 = time.perf_counter()
            p = mesh.cli("orchestrate", "--wait", "--json", str(path), timeout=600, check=False)
            wall = time.perf_counter() - t0
            cpu1, cpuc1, cli1 = mesh.cpu(), mesh.cpu(children=True), children_cpu()
            if p.returncode not in (0, 2) or not p.stdout.strip():
                raise BenchError(f"orchestrate {label} exited {p.returncode}: "
                                 f"{p.stderr.strip()[-500:]}")
            docs = json.loads(p.stdout)
            ok, problem = check_docs(docs, njobs, mesh.names)
            fin = [r["finished"] for d in docs for r in d["results"].values()
                   if r.get("finished")]
            span = max(fin) - min(d["created"] for d in docs) if fin else float("nan")
            rt = [r["roundtrip_time"] for d in docs for r in d["results"].values()
                  if r.get("roundtrip_time") is not None]
            ex = [r["exec_time"] for d in docs for r in d["results"].values()
                  if r.get("exec_time") is not None]
            info = {
                "span": span, "server": cpu1["server"] - cpu0["server"],
                "clients": sum(cpu1[n] - cpu0[n] for n in mesh.names),
                "sh": sum((cpuc1[n] - cpuc0[n]) - (cpu1[n] - cpu0[n]) for n in mesh.names),
                "cli": cli1 - cli0, "ex": ex, "rt": rt,
            }
            measured.append((label, wall, ok, problem, info))
            print(f"jobs: Director {label}: {wall:.2f} s (server span {span:.2f} s), "
                  f"{ok}/{total} success{' (' + problem + ')' if problem else ''}; CPU s: "
                  f"server {info['server']:.2f}, clients {info['clients']:.2f} (+ their sh "
                  f"{info['sh']:.2f}), CLI {info['cli']:.2f}", flush=True)
    run_raw("after Director")

    best = {m: min(r[m] for r in raws) for m in ("linear", "pipelined")}
    raw_best = min(best.values())
    spread = {m: ", ".join(f"{r[m]:.2f}" for r in raws) for m in best}
    sec.rows.append(Row("raw limit: linear (next job sent on result)",
                        f"{best['linear']:.2f} s ({total / best['linear']:,.0f} jobs/s)",
                        note=f"runs before/after Director: {spread['linear']} s"))
    sec.rows.append(Row("raw limit: pipelined (all jobs sent at once)",
                        f"{best['pipelined']:.2f} s ({total / best['pipelined']:,.0f} jobs/s)",
                        note=f"runs before/after Director: {spread['pipelined']} s"))
    raw_cpu = min(r["cpu"] for r in raws) / (2 * total)
    rc = min(raws, key=lambda r: r["cpu"])
    raw_split = (f"server {rc['cpu_server'] / (2 * total) * 1000:.2f}, workers "
                 f"{rc['cpu_workers'] / (2 * total) * 1000:.2f}, /bin/sh "
                 f"{rc['cpu_sh'] / (2 * total) * 1000:.2f}")
    walls: dict[str, list[float]] = {}
    best_runs: dict[str, tuple] = {}
    for entry in measured:
        walls.setdefault(entry[0], []).append(entry[1])
        if entry[0] not in best_runs or entry[1] < best_runs[entry[0]][1]:
            best_runs[entry[0]] = entry
    for label, wall, ok, problem, info in best_runs.values():
        ok = min(e[2] for e in measured if e[0] == label)  # every run must be complete
        problem = "; ".join(e[3] for e in measured if e[0] == label and e[3])
        ratio = wall / raw_best
        what = ("Directorfile, one lane" if label == "linear" else "YAML, async items")
        sec.rows.append(Row(
            f"Director {label} ({what})", f"{wall:.2f} s ({total / wall:,.0f} jobs/s)",
            f"{raw_best:.2f} s", f"{ratio:.2f}×", "≤ 1.25×", ratio <= 1.25 and ok == total,
            note=f"{ok}/{total} success" + (f"; {problem}" if problem else "")
            + (f"; runs: {', '.join(f'{w:.2f}' for w in walls[label])} s"
               if len(walls[label]) > 1 else "")))
        cpu_job = (info["server"] + info["clients"] + info["sh"] + info["cli"]) / total
        split = (f"server {info['server'] / total * 1000:.2f}, clients "
                 f"{info['clients'] / total * 1000:.2f}, /bin/sh "
                 f"{info['sh'] / total * 1000:.2f}, CLI {info['cli'] / total * 1000:.2f}")
        ex, rt = info["ex"], info["rt"]
        sec.notes.append(
            f"Director {label}: {info['span']:.2f} s of the {wall:.2f} s lie between the "
            f"orchestration's creation on the server and its last result (the rest is CLI "
            f"start-up, parsing, submission and printing the JSON). CPU per job: "
            f"{cpu_job * 1000:.2f} ms ({split}) against {raw_cpu * 1000:.2f} ms for the raw "
            f"limit ({raw_split}; both modes averaged). Per job on the node: exec_time p50 "
            f"{ms(pct(ex, 50)) if ex else '-'}; roundtrip_time p50 "
            f"{ms(pct(rt, 50)) if rt else '-'} (it includes the wait in the node's queue: the "
            f"server keeps a window of jobs in flight).")
    sec.notes.insert(0, "Director figures are the wall time of `director orchestrate --wait "
                        "--json FILE` (CLI start-up, file parsing and the JSON of every result "
                        "included), the best of two runs of each mode (alternating); the ratio "
                        "is against the best raw figure (raw measured before and after "
                        "Director). directord takes about 19 s for the full workload on these "
                        "machines (issue 3).")


# ----------------------------------------------------------------------------------------
# 2. latency
# ----------------------------------------------------------------------------------------
def bench_latency(sec: Section, quick: bool) -> None:
    from director.jobs.dsl import parse_line
    from director.net.control import ControlClient, result_of
    from director.protocol.control import CtlEvent, CtlReply

    n_cli, n_mesh, n_small = (15, 100, 5) if quick else (30, 200, 10)
    sec.title = "Latency: single-node round trip of `RUN true` (issue 3)"
    print("latency: starting a mesh (server + 1 client) ...", flush=True)
    with Mesh(1) as mesh:
        line = "RUN --skip-cache true"
        instr = parse_line(line).to_dict()
        payload = {"steps": [{"targets": [], "async": False, "name": None, "jobs": [instr]}],
                   "targets": [], "wait": True}

        def cli_wall(*args: str) -> float:
            t0 = time.perf_counter()
            p = mesh.cli(*args, timeout=30, check=False)
            dt = time.perf_counter() - t0
            if p.returncode != 0:
                raise BenchError(f"'director {' '.join(args)}' exited {p.returncode}: "
                                 f"{p.stderr.strip()[-300:]}")
            return dt

        def py_pass() -> float:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], timeout=30, check=True)
            return time.perf_counter() - t0

        print(f"latency: {n_small} × python -c pass, {n_small} × director health, "
              f"{n_cli} × director exec --wait ...", flush=True)
        py = [py_pass() for _ in range(n_small)]
        health = [cli_wall("health") for _ in range(n_small)]
        cli = [cli_wall("exec", "--wait", line) for _ in range(n_cli)]

        print(f"latency: {n_mesh} × mesh round trip (control socket, no CLI) interleaved with "
              "bare spawns ...", flush=True)
        bare, popen, mesh_rt, node_exec, srv_rt, submit, finish = [], [], [], [], [], [], []
        env = dict(os.environ)
        deadline = time.monotonic() + 300
        with ControlClient(mesh.home(), timeout=30) as c:
            for i in range(n_mesh + 10):
                if time.monotonic() > deadline:
                    raise BenchError("latency loop took over 300 s")
                t0 = time.perf_counter()
                subprocess.run(["/bin/sh", "-c", "true"])
                t1 = time.perf_counter()
                docs, t_sub = None, None
                for msg in c.stream("jobs.submit", payload, timeout=30):
                    if isinstance(msg, CtlReply):
                        docs = result_of(msg)
                    elif isinstance(msg, CtlEvent) and msg.event == "submitted" \
                            and t_sub is None:
                        t_sub = time.perf_counter()
                t2 = time.perf_counter()
                pr = subprocess.Popen(["/bin/sh", "-c", "true"], cwd="/tmp", env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
                pr.communicate(timeout=30)
                t3 = time.perf_counter()
                r = next(iter(docs[0]["results"].values()))
                if r["status"] != "success":
                    raise BenchError(f"mesh round trip {i}: {r['status']} {r.get('error')}")
                if i < 10:
                    continue  # warm-up
                bare.append(t1 - t0)
                mesh_rt.append(t2 - t1)
                popen.append(t3 - t2)
                node_exec.append(r["exec_time"])
                srv_rt.append(r["roundtrip_time"])
                if t_sub is not None:
                    submit.append(t_sub - t1)
                    finish.append(t2 - t_sub - r["roundtrip_time"])

    b50, m50 = pct(bare, 50), pct(mesh_rt, 50)
    c50 = pct(cli, 50)
    sec.rows += [
        Row(f"mesh round trip, no CLI start-up (p50 / p99, n={len(mesh_rt)})",
            f"{ms(m50)} / {ms(pct(mesh_rt, 99))}",
            f"bare spawn {ms(b50)} / {ms(pct(bare, 99))}",
            f"+{(m50 - b50) * 1000:.2f} ms", "p50 ≤ bare + 3 ms", m50 - b50 <= 0.003),
        Row(f"CLI `director exec --wait '{line}'` wall (p50 / p99, n={len(cli)})",
            f"{ms(c50)} / {ms(pct(cli, 99))}", f"`python -c pass` {ms(pct(py, 50))}",
            f"{c50 / pct(py, 50):.1f}×", "p50 < 250 ms", c50 < 0.250),
        Row(f"CLI floor: `director health` wall (p50, n={len(health)})", ms(pct(health, 50))),
        Row(f"Python start-up: `python -c pass` (p50, n={len(py)})", ms(pct(py, 50))),
        Row("spawn the way the node does (Popen, pipes, new session; p50 / p99)",
            f"{ms(pct(popen, 50))} / {ms(pct(popen, 99))}"),
        Row("  of the mesh round trip: submit → 'submitted' event (p50)",
            ms(pct(submit, 50)) if submit else "-",
            note="control socket request, job rows inserted"),
        Row("  of the mesh round trip: server→node→server (roundtrip_time p50)",
            ms(pct(srv_rt, 50))),
        Row("  of which on the node: exec_time p50", ms(pct(node_exec, 50))),
        Row("  of the mesh round trip: the rest (result → CTL_REPLY, p50)",
            ms(pct(finish, 50)) if finish else "-",
            note="results flushed, job documents built and sent"),
    ]
    sec.notes.append(
        "The mesh round trip is one `jobs.submit` with `wait` on the control socket of the "
        "server (ControlClient.stream until CTL_REPLY), measured in the benchmark process; each "
        "iteration also runs one bare `subprocess.run(['/bin/sh','-c','true'])` and one "
        "node-style spawn right before/after, so the spawn baseline sees the same machine load. "
        "`--skip-cache` is used for the CLI runs too, so every run really spawns on the node.")
    print(f"latency: mesh p50 {ms(m50)} vs bare spawn {ms(b50)}; CLI p50 {ms(c50)}", flush=True)


# ----------------------------------------------------------------------------------------
# raw limit: transfer (CURVE chunk stream, credit window, BLAKE2b verify + write)
# ----------------------------------------------------------------------------------------
def _raw_xfer_sender(port: int, nrecv: int, path: str, pub: bytes, sec: bytes) -> None:
    import zmq

    size = os.path.getsize(path)
    nchunks = (size + CHUNK - 1) // CHUNK
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    s.sndhwm = s.rcvhwm = 0
    s.maxmsgsize = 2 * CHUNK + 4096
    s.curve_server = True
    s.curve_publickey, s.curve_secretkey = pub, sec
    s.bind(f"tcp://127.0.0.1:{port}")
    fd = os.open(path, os.O_RDONLY)
    pos: dict[bytes, int] = {}
    credit: dict[bytes, int] = {}
    deadline = time.monotonic() + 60
    while len(pos) < nrecv:
        if not s.poll(1000):
            if time.monotonic() > deadline:
                raise SystemExit("raw sender: receivers did not connect")
            continue
        rid, kind = s.recv_multipart()[:2]
        if kind == b"HELLO":
            pos[rid], credit[rid] = 0, WINDOW
    digests: dict[int, bytes] = {}
    done, cpu_recv = 0, 0.0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 600
    while done < nrecv:
        for rid in pos:
            while credit[rid] > 0 and pos[rid] < nchunks:
                i = pos[rid]
                data = os.pread(fd, CHUNK, i * CHUNK)
                d = digests.get(i)
                if d is None:
                    d = digests[i] = hashlib.blake2b(data, digest_size=32).digest()
                s.send_multipart([rid, b"C", i.to_bytes(8, "big"), d, data], copy=False)
                pos[rid] += 1
                credit[rid] -= 1
        if not s.poll(1000):
            if time.monotonic() > deadline:
                raise SystemExit("raw sender: stalled")
            continue
        while True:
            try:
                rid, kind, *rest = s.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if kind == b"ACK":
                credit[rid] += 1
            elif kind == b"DONE":
                done += 1
                cpu_recv += float(rest[0]) if rest else 0.0
            elif kind == b"BAD":
                raise SystemExit("raw sender: a receiver saw a bad chunk")
    wall = time.perf_counter() - t0
    os.close(fd)
    me = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": wall, "bytes": size * nrecv, "cpu_recv": cpu_recv,
                      "cpu_send": me.ru_utime + me.ru_stime}), flush=True)
    s.close(0)
    ctx.term()


def _raw_xfer_receiver(port: int, server_pub: bytes, dest: str, size: int) -> None:
    import zmq

    nchunks = (size + CHUNK - 1) // CHUNK
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 2000
    s.maxmsgsize = 2 * CHUNK + 4096
    pub, sec = zmq.curve_keypair()
    s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, server_pub
    s.connect(f"tcp://127.0.0.1:{port}")
    s.send_multipart([b"HELLO"])
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    got = 0
    idle = time.monotonic()
    try:
        while got < nchunks and time.monotonic() - idle < 120:
            if not s.poll(1000):
                continue
            _, idx, digest, data = s.recv_multipart(copy=False)
            i = int.from_bytes(idx.bytes, "big")
            buf = data.buffer
            if hashlib.blake2b(buf, digest_size=32).digest() != digest.bytes:
                s.send_multipart([b"BAD"])
                raise SystemExit(f"raw receiver: chunk {i} does not match its digest")
            os.pwrite(fd, buf, i * CHUNK)
            s.send_multipart([b"ACK"])
            got += 1
            idle = time.monotonic()
        os.fsync(fd)
    finally:
        os.close(fd)
    if got == nchunks:
        me = resource.getrusage(resource.RUSAGE_SELF)
        s.send_multipart([b"DONE", str(me.ru_utime + me.ru_stime).encode()])
    s.close()  # linger 2 s: DONE is delivered
    ctx.term()


def raw_transfer(path: Path, dests: list[Path]) -> dict[str, float]:
    """The raw CURVE chunk stream of ``path`` to each of ``dests``: aggregate ``mbs``
    (10^6 B/s), and CPU seconds of the sender and of all receivers."""
    import zmq

    pub, sec = zmq.curve_keypair()
    port = free_port()
    size = path.stat().st_size
    try:
        res = _raw_run(["_raw-xfer-send", str(port), str(len(dests)), str(path), pub.decode(),
                        sec.decode()],
                       [["_raw-xfer-recv", str(port), pub.decode(), str(d), str(size)]
                        for d in dests], 900, "raw transfer", settle=10.0)
        for d in dests:
            if d.stat().st_size != size:
                raise BenchError(f"raw transfer: {d} has the wrong size")
        return {"mbs": res["bytes"] / res["seconds"] / 1e6, "cpu_send": res["cpu_send"],
                "cpu_recv": res["cpu_recv"]}
    finally:
        for d in dests:
            try:
                d.unlink()
            except FileNotFoundError:
                pass


# ----------------------------------------------------------------------------------------
# 3. transfer
# ----------------------------------------------------------------------------------------
def _random_file(path: Path, size: int) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    tmp.rename(path)


def prepare_data(size: int) -> tuple[Path, Path]:
    """DATA/big-SIZE.bin and DATA/tree-SIZE/ (1,000 files, SIZE bytes in total), reused."""
    DATA.mkdir(exist_ok=True)
    tag = f"{size // MiB}m"
    big = DATA / f"big-{tag}.bin"
    if not big.exists() or big.stat().st_size != size:
        print(f"transfer: creating {big} ({size // MiB} MiB of random data) ...", flush=True)
        _random_file(big, size)
    tree = DATA / f"tree-{tag}"
    marker = DATA / f".tree-{tag}-complete"   # outside the tree: it must not be copied
    if not marker.exists():
        print(f"transfer: creating {tree}/ (1,000 files, {size // MiB} MiB) ...", flush=True)
        shutil.rmtree(tree, ignore_errors=True)
        each = size // 1000
        for i in range(1000):
            d = tree / f"d{i // 100:02d}"
            d.mkdir(parents=True, exist_ok=True)
            n = each + (size - each * 1000 if i == 999 else 0)
            _random_file(d / f"f{i:04d}.bin", n)
        marker.write_text("ok\n")
    return big, tree


def blake2_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


class RSSSampler:
    """Peak VmRSS of a process, sampled every 20 ms in a thread (bounded by stop())."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            v = proc_status(self.pid, "VmRSS")
            if v is None:
                return
            self.peak = max(self.peak, v)

    def __enter__(self) -> RSSSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=2)


def _transfer_of(docs: list[dict]) -> dict[str, dict]:
    """node -> result for the single COPY job in ``docs``; raises on any failure."""
    if len(docs) != 1:
        raise BenchError(f"expected one job, got {len(docs)}")
    bad = {n: f"{r['status']}: {r.get('error') or 'no transfer stats'}"
           for n, r in docs[0]["results"].items()
           if r["status"] != "success" or not isinstance(r.get("transfer"), dict)}
    if bad:
        first = next(iter(bad))
        raise BenchError(f"COPY failed on {len(bad)}/{len(docs[0]['results'])} nodes "
                         f"({', '.join(bad)}); {first}: {bad[first]}")
    return docs[0]["results"]


def bench_transfer(sec: Section, quick: bool) -> None:
    size = 128 * MiB if quick else GiB
    label = f"{size // MiB} MiB" if quick else "1 GiB"
    sec.title = f"Transfer: COPY of {label} (issue 4)"
    free = shutil.disk_usage("/tmp").free
    if free < MIN_FREE_FOR_TRANSFER:
        sec.skipped = (f"skipped: only {free / GiB:.1f} GiB free in /tmp "
                       f"(needs {MIN_FREE_FOR_TRANSFER // GiB} GiB)")
        print(f"transfer: {sec.skipped}", flush=True)
        return
    print("transfer: starting a mesh (server + 7 clients) ...", flush=True)
    with Mesh(7) as mesh:
        # Is COPY there yet?  One tiny file to one node.
        probe_dir = mesh.root / "probe"
        probe_dir.mkdir()
        (probe_dir / "hello.txt").write_text("hello\n")
        p = mesh.cli("exec", "--wait", "--json", "--target", "n1",
                     f"COPY {probe_dir}/hello.txt {mesh.root}/probe-dest/", timeout=60,
                     check=False)
        if "not available" in (p.stdout + p.stderr):
            sec.skipped = "transfer: not available yet (COPY answers 'not available')"
            print(sec.skipped, flush=True)
            return
        if p.returncode != 0:
            raise BenchError(f"COPY probe failed (exit {p.returncode}): "
                             f"{(p.stderr.strip() or p.stdout.strip())[-500:]}")
        big, tree = prepare_data(size)
        dest_root = mesh.root / "dest"
        single, fan = ["n7"], [f"n{i}" for i in range(1, 7)]
        for n in mesh.names:  # each node copies into its own directory
            (dest_root / n).mkdir(parents=True)
            docs = mesh.exec_json(f"ARG BENCH_DEST={dest_root / n}", targets=[n], wait_timeout=30)
            if docs[0]["status"] != "success":
                raise BenchError(f"ARG on {n} failed")

        def clear(nodes: list[str]) -> None:
            for n in nodes:
                for child in (dest_root / n).iterdir():
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()

        def copy(src: str, nodes: list[str]) -> tuple[float, dict[str, dict]]:
            t0 = time.perf_counter()
            docs = mesh.exec_json(f"COPY {src} ${{BENCH_DEST}}/", targets=nodes,
                                  wait_timeout=900)
            return time.perf_counter() - t0, _transfer_of(docs)

        raw_dir = mesh.root / "raw"
        raw_dir.mkdir()
        print("transfer: raw limit, 1 receiver ...", flush=True)
        raw1d = raw_transfer(big, [raw_dir / "r1.bin"])
        raw1 = raw1d["mbs"]
        print(f"transfer: raw 1 receiver {raw1:,.0f} MB/s; 6 receivers ...", flush=True)
        raw6d = raw_transfer(big, [raw_dir / f"r{i}.bin" for i in range(1, 7)])
        raw6 = raw6d["mbs"]
        print(f"transfer: raw 6 receivers {raw6:,.0f} MB/s (aggregate)", flush=True)
        src_digest = blake2_file(big)

        def attempt(what: str, target: str, step: Callable[[], None]) -> bool:
            """Run one measurement; a Director failure becomes a FAIL row, not the end."""
            try:
                step()
                return True
            except BenchError as exc:
                print(f"transfer: {what}: FAILED: {exc}", flush=True)
                sec.rows.append(Row(what, "failed", "", "", target, False, note=str(exc)[:400]))
                return False

        def one_node() -> None:  # first deploy: the server also builds the manifest
            wall, res = copy(str(big), single)
            mbs1 = size / wall / 1e6
            got = blake2_file(dest_root / "n7" / big.name)
            sent = res["n7"]["transfer"]["bytes_sent"]
            sec.rows.append(Row(f"{label} to 1 node", f"{mbs1:,.0f} MB/s ({wall:.2f} s)",
                                f"{raw1:,.0f} MB/s", f"{mbs1 / raw1:.0%}", "≥ 70% of raw",
                                mbs1 >= 0.7 * raw1 and got == src_digest,
                                note=f"bytes_sent {sent:,}; digest "
                                     f"{'ok' if got == src_digest else 'WRONG'}; node exec_time "
                                     f"{res['n7'].get('exec_time') or 0:.2f} s"))
            print(f"transfer: Director 1 node {mbs1:,.0f} MB/s ({wall:.2f} s)", flush=True)

        def six_nodes() -> None:  # with the server's peak RSS
            server_pid = mesh.pid()
            hwm_reset = True
            try:
                Path(f"/proc/{server_pid}/clear_refs").write_text("5")
            except OSError:
                hwm_reset = False
            cpu0 = mesh.cpu()
            with RSSSampler(server_pid) as sampler:
                wall, res = copy(str(big), fan)
            cpu1 = mesh.cpu()
            hwm = proc_status(server_pid, "VmHWM") or 0
            peak = max(sampler.peak, hwm if hwm_reset else 0) or hwm
            mbs6 = size * len(fan) / wall / 1e6
            got = blake2_file(dest_root / "n1" / big.name)
            sent = [res[n]["transfer"]["bytes_sent"] for n in fan]
            sec.rows.append(Row(
                f"{label} to 6 nodes (aggregate)", f"{mbs6:,.0f} MB/s ({wall:.2f} s)",
                f"{raw6:,.0f} MB/s", f"{mbs6 / raw6:.0%}", "≥ 70% of raw",
                mbs6 >= 0.7 * raw6 and got == src_digest,
                note=f"bytes_sent per node {min(sent):,}–{max(sent):,}; n1 digest "
                     f"{'ok' if got == src_digest else 'WRONG'}; CPU s: server "
                     f"{cpu1['server'] - cpu0['server']:.1f} (raw sender "
                     f"{raw6d['cpu_send']:.1f}), 6 clients "
                     f"{sum(cpu1[n] - cpu0[n] for n in fan):.1f} (raw receivers "
                     f"{raw6d['cpu_recv']:.1f})"))
            sec.rows.append(Row("server peak RSS during the 6-node deploy",
                                f"{peak / 1e6:,.0f} MB", "", "", "< 200 MB", peak < 200e6,
                                note=("VmHWM after clear_refs reset" if hwm_reset else
                                      "VmRSS sampled every 20 ms (VmHWM could not be reset)")))
            print(f"transfer: Director 6 nodes {mbs6:,.0f} MB/s ({wall:.2f} s), server peak "
                  f"RSS {peak / 1e6:.0f} MB", flush=True)

        def delta() -> None:  # 100 bytes changed in the middle, redeployed to the same 6 nodes
            off = size // 2 - 50   # straddles the chunk boundary in the middle: 2 chunks change
            fd = os.open(big, os.O_RDWR)
            try:
                original = os.pread(fd, 100, off)
                os.pwrite(fd, bytes(b ^ 0xFF for b in original), off)
                os.fsync(fd)
                wall, res = copy(str(big), fan)
            finally:
                os.pwrite(fd, original, off)
                os.close(fd)
            sent = [res[n]["transfer"]["bytes_sent"] for n in fan]
            sec.rows.append(Row("100-byte change in the middle, redeploy to 6 nodes",
                                f"max bytes_sent {max(sent):,} ({wall:.2f} s)", "", "",
                                f"≤ 2 chunks ({2 * CHUNK:,} B)", max(sent) <= 2 * CHUNK))
            print(f"transfer: delta redeploy {wall:.2f} s, bytes_sent max {max(sent):,}",
                  flush=True)

        def tree_deploys() -> None:  # a tree of 1,000 files: first deploy, unchanged redeploy
            wall_first, res = copy(f"{tree}/", fan)
            mbs_tree = size * len(fan) / wall_first / 1e6
            sec.rows.append(Row(f"tree of 1,000 files / {label} to 6 nodes, first deploy",
                                f"{mbs_tree:,.0f} MB/s ({wall_first:.2f} s)",
                                f"{raw6:,.0f} MB/s", f"{mbs_tree / raw6:.0%}",
                                note="raw limit is the single-file stream (no per-file cost)"))
            print(f"transfer: tree first deploy {wall_first:.2f} s", flush=True)
            wall, res = copy(f"{tree}/", fan)
            sent = [res[n]["transfer"]["bytes_sent"] for n in fan]
            execs = [res[n].get("exec_time") or 0 for n in fan]
            sec.rows.append(Row(f"unchanged tree (1,000 files / {label}) redeploy to 6 nodes",
                                f"{wall:.2f} s, bytes_sent max {max(sent):,}", "", "",
                                "< 1 s and 0 bytes", wall < 1.0 and max(sent) == 0,
                                note=f"node exec_time max {max(execs):.2f} s"))
            print(f"transfer: unchanged tree redeploy {wall:.2f} s (bytes_sent max "
                  f"{max(sent)})", flush=True)

        try:
            attempt(f"{label} to 1 node", "≥ 70% of raw", one_node)
        finally:
            clear(single)
        try:
            if attempt(f"{label} to 6 nodes", "≥ 70% of raw", six_nodes):
                attempt("100-byte change in the middle, redeploy to 6 nodes",
                        f"≤ 2 chunks ({2 * CHUNK:,} B)", delta)
        finally:
            clear(fan)
        try:
            attempt(f"tree of 1,000 files / {label} to 6 nodes, deploy + unchanged redeploy",
                    "< 1 s and 0 bytes", tree_deploys)
        finally:
            clear(fan)
    sec.notes.append(
        "MB/s is 10^6 bytes per second of `director exec --wait --json --target ... 'COPY ...'` "
        "wall time (CLI start-up and, on the first deploy, the server's manifest hashing "
        "included), summed over nodes. The raw limit streams the same file in 1 MiB chunks with "
        "a credit window of 8 over CURVE; the sender reads each chunk per receiver and hashes "
        "it once, each receiver BLAKE2b-verifies, writes and fsyncs. Node homes and "
        "destinations are on the same disk as the source.")


# ----------------------------------------------------------------------------------------
# scale: one server, many simulated nodes (scripts/simnodes.py)
# ----------------------------------------------------------------------------------------
SCALE_NODES = 1000          # --scale-nodes
SIM_PER_PROCESS = 5000      # sockets per simulator process (open files: 2 per socket)
SCALE_JOBS = 100


def _sim_status(paths: list[Path]) -> list[dict]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            out.append({})
    return out


def _server_stats(home: str, reset: bool = False) -> dict:
    from director.net.control import ControlClient

    with ControlClient(home, timeout=60) as c:
        return c.call("server.stats", {"reset": reset})


def _stages_text(loop: dict) -> str:
    """Where the longest loop iteration spent its time, e.g. 'nodes 40 ms, gc 310 ms'."""
    stages = loop.get("longest_recent_stages_ms") or {}
    return ", ".join(f"{k} {v:.0f} ms" for k, v in stages.items()) or "no stage over 1 ms"


def bench_scale(sec: Section, quick: bool) -> None:
    from director.jobs.dsl import parse_line
    from director.net.control import ControlClient, result_of
    from director.protocol.control import CtlPart, CtlReply, join_parts

    n = SCALE_NODES
    njobs = 20 if quick else SCALE_JOBS
    sec.key = f"scale{n}"  # one block per N in BENCHMARKS.md
    sec.title = f"Scale: one server, {n:,} simulated nodes (issue 12)"
    nsim = (n + SIM_PER_PROCESS - 1) // SIM_PER_PROCESS
    counts = [n // nsim + (i < n % nsim) for i in range(nsim)]
    mesh = Mesh(0, heartbeat=5.0)
    try:
        print(f"scale: server + {nsim} simulator process(es) for {n:,} nodes ...", flush=True)
        mesh._start("server", "--bind", f"tcp://127.0.0.1:{mesh.port}", "server")
        mesh.wait_for("server start",
                      lambda: mesh.cli("health", check=False, timeout=10).returncode == 0)
        spid = mesh.pid()
        tok = json.loads(mesh.cli("token", "create", "--uses", str(n), "--ttl", "1h",
                                  "--address", f"127.0.0.1:{mesh.port}", "--json").stdout)
        status = [mesh.root / f"sim{i}.json" for i in range(nsim)]
        for i in range(nsim):
            mesh.procs[f"sim{i}"] = spawn(
                [sys.executable, str(ROOT / "scripts" / "simnodes.py"), "--server",
                 f"127.0.0.1:{mesh.port}", "--token", tok["token"], "--count", str(counts[i]),
                 "--prefix", f"s{i}n", "--status", str(status[i]), "--heartbeat", "5"],
                log=mesh.root / f"sim{i}.log")

        def phase(name: str) -> bool:
            return all(s.get("phase") == name for s in _sim_status(status))

        mesh.wait_for("every simulated node enrolled", lambda: phase("connecting")
                      or phase("serving"), timeout=60 + n / 50)
        mesh.wait_for("every simulated node said HELLO and was answered",
                      lambda: phase("serving"), timeout=60 + n / 50)
        sims = _sim_status(status)
        enrolled = max(s["t_enrolled"] for s in sims)
        online_sim = max(s["t_online"] for s in sims)

        def health_online() -> bool:
            with ControlClient(mesh.home(), timeout=30) as c:
                return c.call("health")["nodes_online"] == n

        mesh.wait_for(f"{n} nodes online on the server", health_online, timeout=120)
        online_srv = time.time() - min(s["serve_started"] for s in sims)
        print(f"scale: enrolled in {enrolled:.1f} s, all online {online_srv:.1f} s after "
              "the agents connected", flush=True)

        # idle: heartbeats only
        time.sleep(3.0)
        _server_stats(mesh.home(), reset=True)
        idle_s = 5.0 if quick else 15.0
        c0, t0 = cpu_seconds(spid), time.perf_counter()
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds(spid) - c0) / (time.perf_counter() - t0)
        idle_rss = proc_status(spid, "VmRSS") or 0
        idle_loop = _server_stats(mesh.home(), reset=True)["loop"]
        print(f"scale: idle server CPU {idle_cpu:.1%}, RSS {idle_rss / 1e6:.0f} MB, longest "
              f"loop {idle_loop['longest_recent_ms']:.1f} ms ({_stages_text(idle_loop)})",
              flush=True)

        # fan-out: one RUN true to every node, through the CLI
        try:
            Path(f"/proc/{spid}/clear_refs").write_text("5")
        except OSError:
            pass
        fan_walls, rts, fan_bad = [], [], 0
        for _ in range(3):
            t0 = time.perf_counter()
            p = mesh.cli("exec", "--wait", "--json", "RUN true", timeout=300, check=False)
            fan_walls.append(time.perf_counter() - t0)
            if p.returncode not in (0, 2) or not p.stdout.strip():
                raise BenchError(f"fan-out exec exited {p.returncode}: "
                                 f"{p.stderr.strip()[-300:]}")
            res = json.loads(p.stdout)[0]["results"]
            fan_bad += sum(r["status"] != "success" for r in res.values()) + n - len(res)
            rts += [r["roundtrip_time"] for r in res.values()
                    if r.get("roundtrip_time") is not None]
            time.sleep(1.0)
        fan_loop = _server_stats(mesh.home(), reset=True)["loop"]
        print(f"scale: fan-out walls {', '.join(f'{w:.2f}' for w in fan_walls)} s, longest "
              f"loop {fan_loop['longest_recent_ms']:.1f} ms ({_stages_text(fan_loop)})",
              flush=True)

        # orchestration: njobs × RUN true on every node, one lane, --wait
        instr = parse_line("RUN true").to_dict()
        payload = {"steps": [{"targets": [], "async": False, "name": None,
                              "jobs": [instr] * njobs}], "targets": [], "wait": True,
                   "parts": True}  # the answer in pieces as jobs finish, as the CLI takes it
        try:
            Path(f"/proc/{spid}/clear_refs").write_text("5")
        except OSError:
            pass
        rss_before = proc_status(spid, "VmRSS") or 0
        sims0 = _sim_status(status)
        c0 = cpu_seconds(spid)
        t0 = time.perf_counter()
        docs = None
        parts: list[bytes] = []
        with RSSSampler(spid) as rss, ControlClient(mesh.home(), timeout=600) as c:
            for msg in c.stream("jobs.submit", payload, timeout=600):
                if isinstance(msg, CtlPart):
                    parts.append(msg.data)
                elif isinstance(msg, CtlReply):
                    if msg.ok and msg.result_json:
                        docs = json.loads(join_parts(parts, msg.data))
                    else:
                        docs = result_of(msg)
        orch_wall = time.perf_counter() - t0
        orch_cpu = cpu_seconds(spid) - c0
        orch_peak = max(rss.peak, proc_status(spid, "VmHWM") or 0)
        orch_loop = _server_stats(mesh.home(), reset=True)["loop"]
        statuses: dict[str, int] = {}
        for d in docs or []:
            for r in d["results"].values():
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        total = n * njobs
        got = statuses.get("success", 0)
        del docs
        time.sleep(5.0)
        rest_rss = proc_status(spid, "VmRSS") or 0
        sims1 = _sim_status(status)
        lost = sum(v for k, v in statuses.items() if k != "success") + total - sum(
            statuses.values())
        server_log = mesh.log_tail("server", 10**9)
        offline = server_log.count("went offline")
        for line in [ln for ln in server_log.splitlines() if "went offline" in ln][:5]:
            print(f"scale: server log: {line}", flush=True)  # which nodes, when, and why
        with ControlClient(mesh.home(), timeout=30) as c:
            still = c.call("health")["nodes_online"]
        sim_cpu = sum(s.get("cpu", 0) for s in sims1) - sum(s.get("cpu", 0) for s in sims0)
        unacked = sum(s.get("unacked", 0) for s in sims1)
        print(f"scale: orchestration {orch_wall:.1f} s, {got:,}/{total:,} success, server "
              f"CPU {orch_cpu:.1f} s, peak RSS {orch_peak / 1e6:.0f} MB, longest loop "
              f"{orch_loop['longest_recent_ms']:.1f} ms ({_stages_text(orch_loop)})", flush=True)
    finally:
        mesh.close()

    per_result = orch_cpu / max(got, 1)
    sec.rows += [
        Row("enroll every node by token (ENROLL, 250 at a time)", f"{enrolled:.1f} s"),
        Row("time to all online (agents connect at once, HELLO answered, server counts all)",
            f"{online_srv:.1f} s", note=f"simulator saw every HELLO answered at "
            f"{online_sim:.1f} s"),
        Row("idle server CPU (heartbeats every 5 s)", f"{idle_cpu:.1%}", target="< 10 %",
            ok=idle_cpu < 0.10 if n >= 5000 else None, note=f"over {idle_s:.0f} s"),
        Row("server RSS idle / peak (orchestration) / at rest after it",
            f"{idle_rss / 1e6:.0f} / {orch_peak / 1e6:.0f} / {rest_rss / 1e6:.0f} MB",
            target="peak < 1 GiB", ok=orch_peak < GiB if n >= 5000 else None,
            note=f"RSS before the orchestration {rss_before / 1e6:.0f} MB"),
        Row(f"fan-out `exec --wait --json 'RUN true'` to all {n:,} (CLI wall, 3 runs)",
            " / ".join(f"{w:.2f}" for w in fan_walls) + " s", target="< 1.5 s",
            ok=min(fan_walls) < 1.5 if n >= 5000 else None,
            note=f"failures {fan_bad}"),
        Row("  fan-out round trip server→node→server (p50 / p90 / p99 / max)",
            " / ".join(ms(pct(rts, q)) for q in (50, 90, 99)) + f" / {ms(max(rts))}"
            if rts else "n/a"),
        Row(f"{njobs}-job orchestration on every node ({total:,} results, --wait)",
            f"{orch_wall:.1f} s ({got / orch_wall:,.0f} results/s)",
            note="control socket, no CLI; " + ", ".join(f"{k} {v:,}"
                                                        for k, v in sorted(statuses.items()))),
        Row("  server CPU per result", f"{per_result * 1e6:.0f} µs", target="< 40 µs",
            ok=per_result < 40e-6 if n >= 5000 else None,
            note=f"server {orch_cpu:.1f} s CPU in {orch_wall:.1f} s; simulator "
                 f"{sim_cpu:.1f} s"),
        Row("longest server loop iteration: idle / fan-out / orchestration",
            f"{idle_loop['longest_recent_ms']:.0f} / {fan_loop['longest_recent_ms']:.0f} / "
            f"{orch_loop['longest_recent_ms']:.0f} ms", target="< 100 ms",
            ok=max(idle_loop['longest_recent_ms'], fan_loop['longest_recent_ms'],
                   orch_loop['longest_recent_ms']) < 100 if n >= 5000 else None,
            note=f"iterations over 50 ms: {orch_loop['slow_iterations']}; the longest spent "
                 + _stages_text(orch_loop)),
        Row("tasks lost or not success / nodes ever offline / unacked results",
            f"{lost:,} / {offline} / {unacked:,}", target="0 / 0 / 0",
            ok=lost == 0 and offline == 0 and unacked == 0,
            note=f"{still:,} of {n:,} online at the end"),
    ]
    sec.notes += [
        f"Simulated nodes: `scripts/simnodes.py` ({nsim} process(es)), each node a CURVE DEALER"
        " with its own key, enrolled by a join token with the real ENROLL, then connected as an"
        " agent (HELLO, HEARTBEAT every 5 s, each JOB/JOBS answered at once with `success`"
        " RESULTS of at most 64, ACKs consumed, HELLO again every 3 s until answered, as an"
        " agent says it on each link up); no process is spawned for a job, so the"
        " figures are the server's. Server: defaults (heartbeat 5 s, node expiry 30 s).",
        "Longest loop iteration: the server measures each poll-loop iteration's work (the wait"
        " left out) and answers it in the `server.stats` control operation; targets are issue"
        " 12's for 5,000 nodes (at smaller N the rows are for information).",
    ]

# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------
def print_table(sections: list[Section]) -> None:
    head = ["benchmark", "Director", "raw limit (same run)", "ratio", "target", "result"]
    rows = []
    for s in sections:
        if s.skipped:
            rows.append([s.key, s.skipped, "", "", "", "skip"])
        for r in s.rows:
            rows.append([f"{s.key}: {r.what}", r.director, r.raw, r.ratio, r.target, r.verdict])
    widths = [min(max(len(r[i]) for r in [head, *rows]), 70 if i == 0 else 40)
              for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print("\n" + line + "\n" + "-" * len(line))
    for r in rows:
        print("  ".join(c[:w].ljust(w) for c, w in zip(r, widths)))


def section_md(s: Section, quick: bool) -> str:
    out = [f"<!-- bench:{s.key} -->", f"## {s.title}{' — QUICK run' if quick else ''}", "",
           f"Run: {s.facts} · took {s.seconds:.0f} s", ""]
    if s.skipped:
        out += [f"**{s.skipped}**", ""]
    if s.rows:
        out += ["| what | Director | raw limit (same run) | ratio | target | result | notes |",
                "|---|---|---|---|---|---|---|"]
        for r in s.rows:
            cells = [r.what, r.director, r.raw, r.ratio, r.target,
                     f"**{r.verdict}**" if r.ok is not None else "", r.note]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    for n in s.notes:
        out.append(f"- {n}")
    if s.notes:
        out.append("")
    out.append(f"<!-- /bench:{s.key} -->")
    return "\n".join(out)


HEADER = """# Director benchmarks

Written by `scripts/bench.py` (`.venv/bin/python scripts/bench.py [--quick] [--only
jobs|latency|transfer]`). Everything runs on 127.0.0.1 with real processes: a `director
server`, `director client` processes in their own homes, enrolled by token, driven by the
`director` CLI. The machines are shared 2-core VMs whose wall-clock figures move by up to 2×
between runs, so every Director figure stands beside a raw limit measured **in the same run**
(plain pyzmq CURVE between processes started by the script); see
`../shared/notes/limits.md` for how those limits were first measured.

Machine of the latest run: {facts}
"""


def write_md(path: Path, sections: list[Section], facts: dict[str, str], quick: bool) -> None:
    """Replace the blocks of the sections that ran, in place; everything else in the
    file (hand-written sections included) stays as it is; a new block goes last."""
    old = path.read_text() if path.exists() else ""
    if not old:
        path.write_text(HEADER.format(facts=facts_line(facts)) + "\n" + "\n\n".join(
            section_md(s, quick) for s in sections) + "\n")
        return
    text = re.sub(r"^Machine of the latest run: .*$",
                  lambda _: "Machine of the latest run: " + facts_line(facts), old, count=1,
                  flags=re.M)
    for s in sections:
        block = section_md(s, quick)
        pattern = re.compile(rf"<!-- bench:{s.key} -->.*?<!-- /bench:{s.key} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------
def bench_stream(sec: Section, quick: bool) -> None:
    from bench_stream import bench_stream as run  # scripts/bench_stream.py

    run(sec, quick, Mesh, Row, DIRECTOR, clean_env(), BenchError)


BENCHES = {"jobs": bench_jobs, "latency": bench_latency, "transfer": bench_transfer,
           "scale": bench_scale, "stream": bench_stream}


def _internal(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "_raw-jobs-server":
        _raw_jobs_server(int(args[0]), int(args[1]), int(args[2]), args[3].encode(),
                         args[4].encode())
    elif mode == "_raw-jobs-worker":
        _raw_jobs_worker(int(args[0]), args[1].encode())
    elif mode == "_raw-xfer-send":
        _raw_xfer_sender(int(args[0]), int(args[1]), args[2], args[3].encode(),
                         args[4].encode())
    elif mode == "_raw-xfer-recv":
        _raw_xfer_receiver(int(args[0]), args[1].encode(), args[2], int(args[3]))
    else:
        raise SystemExit(f"unknown internal mode {mode}")


def main() -> int:
    global SCALE_NODES
    if len(sys.argv) > 1 and sys.argv[1].startswith("_raw-"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        _internal(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="200 jobs per node, 128 MiB transfers (a smoke run)")
    ap.add_argument("--only", choices=sorted(BENCHES), action="append",
                    help="run only this benchmark (repeatable)")
    ap.add_argument("--scale-nodes", type=int, default=SCALE_NODES, metavar="N",
                    help="simulated nodes for --only scale (1000; try 5000 or 10000)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="report file")
    ap.add_argument("--no-write", action="store_true", help="do not write the report")
    ap.add_argument("--clean-data", action="store_true",
                    help=f"delete {DATA} (the reusable transfer inputs) and exit")
    opts = ap.parse_args()
    if opts.clean_data:
        shutil.rmtree(DATA, ignore_errors=True)
        print(f"removed {DATA}")
        return 0
    sys.path.insert(0, str(ROOT))
    if not 1 <= opts.scale_nodes <= 10000:
        ap.error("--scale-nodes must be 1 to 10000")
    SCALE_NODES = opts.scale_nodes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    facts = machine_facts()
    print(f"bench: {facts_line(facts)}", flush=True)
    names = opts.only or ["jobs", "latency", "transfer", "stream"]
    sections: list[Section] = []
    t_all = time.perf_counter()
    failed = False
    try:
        for name in names:
            sec = Section(name, name)
            sec.facts = facts_line(machine_facts())
            t0 = time.perf_counter()
            try:
                BENCHES[name](sec, opts.quick)
            except BenchError as exc:
                print(f"bench: {name}: ERROR: {exc}", file=sys.stderr, flush=True)
                sec.skipped = f"error: {exc}"
                failed = True
            sec.seconds = time.perf_counter() - t0
            sec.facts += " / at end " + " ".join(f"{x:.2f}" for x in os.getloadavg())
            sections.append(sec)
    finally:
        stop(list(_LIVE))
    print_table(sections)
    total = time.perf_counter() - t_all
    print(f"\nbench: finished in {total:.0f} s", flush=True)
    if not opts.no_write:
        write_md(Path(opts.out), sections, facts, opts.quick)
        print(f"bench: wrote {opts.out}")
    if failed:
        return 1
    return 0 if all(r.ok is not False for s in sections for r in s.rows) else 2


if __name__ == "__main__":
    sys.exit(main())
