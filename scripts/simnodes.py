#!/usr/bin/env python3
"""Many simulated nodes in one process, speaking Director's real node protocol.

    .venv/bin/python scripts/simnodes.py --server 127.0.0.1:PORT --token TOKEN \\
        --count 1000 --status /tmp/sim.json [--heartbeat 5] [--prefix sim]

Each node is its own CURVE DEALER with its own key: it enrolls with the join token
(ENROLL, the real message), then connects again as an agent does -- HELLO, a
HEARTBEAT every ``--heartbeat`` seconds, every JOB/JOBS answered at once with
``success`` RESULTS (at most 64 to a message, as the agent batches them), ACKs
consumed as the agent's journal does.  No process is spawned for a job: the
simulator measures the server, not /bin/sh.  Used by ``scripts/bench.py --only
scale`` (which reads the JSON status file it rewrites every half second) and by
the integration tests that need a node whose connection stays up while it is
silent.  Loopback only; every loop is bounded by SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from collections import deque
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from director.protocol import messages as M  # noqa: E402
from director.protocol.frames import batch, split  # noqa: E402
from director.trust.tokens import JoinToken  # noqa: E402

RESULT_BATCH = 64          # the agent's limit (client/core.py)
HWM = 10000                # as transport.py sets
ENROLL_WAVE = 250          # enrollments in flight at once
ENROLL_PATIENCE = 10.0     # s without an answer (a refused handshake): try again
HELLO_AGAIN = 3.0          # s: HELLO again until answered (an agent says it on each link
#                            up; a handshake the server refused dropped the queued one)
_TYPES = frozenset(M.TYPES)


def _socket(ctx: zmq.Context, pub: bytes, sec: bytes, server_key: bytes,
            heartbeat: float) -> zmq.Socket:
    """A DEALER set up the way director/net/transport.py sets up a node's."""
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    ivl = max(100, int(heartbeat * 1000))
    s.heartbeat_ivl, s.heartbeat_timeout, s.heartbeat_ttl = ivl, ivl * 3, 0
    s.handshake_ivl = 5000
    s.sndhwm = s.rcvhwm = HWM
    s.curve_secretkey, s.curve_publickey, s.curve_serverkey = sec, pub, server_key
    s.reconnect_ivl, s.reconnect_ivl_max = 100, 5000
    s.immediate = False
    return s


def _frames(msg: M.Msg) -> list[bytes]:
    return M.encode(msg)


class Sim:
    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        token = JoinToken.decode(opts.token)
        self.server_key = token.server_key
        self.ctx = zmq.Context(io_threads=opts.io_threads)
        self.ctx.set(zmq.MAX_SOCKETS, 2 * opts.count + 1000)  # closed ones linger a while
        self.keys = [zmq.curve_keypair() for _ in range(opts.count)]
        self.names = [f"{opts.prefix}{i:05d}" for i in range(opts.count)]
        self.stop = False
        host, _, port = opts.server.rpartition(":")
        # each node connects from its own loopback address, as nodes on a network do
        # (the server caps unproven connections per source address)
        self.endpoints = [f"tcp://127.{10 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}:0;"
                          f"{host}:{port}" for i in range(opts.count)]
        self.stats = {"count": opts.count, "enrolled": 0, "refused": 0, "online": 0,
                      "jobs": 0, "results": 0, "acked": 0, "unacked": 0, "errors": 0,
                      "revoked": 0, "heartbeats": 0, "enroll_retries": 0, "phase": "enrolling",
                      "t_enrolled": None, "t_online": None, "error_text": ""}
        self.unacked: set[str] = set()
        self.t0 = time.monotonic()

    # -- status ---------------------------------------------------------------
    def write_status(self) -> None:
        self.stats["unacked"] = len(self.unacked)
        self.stats["cpu"] = _cpu()
        self.stats["rss"] = _rss()
        path = Path(self.opts.status)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats))
        os.replace(tmp, path)

    # -- enrollment -------------------------------------------------------------
    def enroll(self) -> None:
        """Every key enrolls by token, ENROLL_WAVE at a time, on its own connection."""
        todo = deque(range(self.opts.count))
        live: dict[zmq.Socket, tuple[int, float]] = {}
        poller = zmq.Poller()
        last_status = 0.0
        while (todo or live) and not self.stop:
            while todo and len(live) < ENROLL_WAVE:
                i = todo.popleft()
                pub, sec = self.keys[i]
                s = _socket(self.ctx, pub, sec, self.server_key, self.opts.heartbeat)
                s.connect(self.endpoints[i])
                s.send_multipart(_frames(M.Enroll(self.names[i], self.opts.token, "sim")))
                live[s] = (i, time.monotonic() + ENROLL_PATIENCE)
                poller.register(s, zmq.POLLIN)
            for s, _ in poller.poll(1000):
                try:
                    msg = M.decode(s.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    continue
                live.pop(s)
                poller.unregister(s)
                s.close(0)
                if isinstance(msg, M.Enrolled) and msg.state == "accepted":
                    self.stats["enrolled"] += 1
                else:
                    self.stats["refused"] += 1
                    self.stats["error_text"] = str(msg)[:300]
            now = time.monotonic()
            for s, (i, deadline) in list(live.items()):
                if now > deadline:  # never answered: its handshake was refused; again
                    del live[s]
                    poller.unregister(s)
                    s.close(0)
                    todo.append(i)
                    self.stats["enroll_retries"] += 1
            if now - last_status > 0.5:
                self.write_status()
                last_status = now
        self.stats["t_enrolled"] = time.monotonic() - self.t0

    # -- serving ----------------------------------------------------------------
    def serve(self) -> None:
        opts = self.opts
        self.stats["phase"] = "connecting"
        t_start = time.monotonic()
        self.stats["serve_started"] = time.time()
        socks: list[zmq.Socket] = []
        index: dict[zmq.Socket, int] = {}
        poller = zmq.Poller()
        hello_answered = [False] * opts.count
        for i, (pub, sec) in enumerate(self.keys):
            s = _socket(self.ctx, pub, sec, self.server_key, opts.heartbeat)
            s.connect(self.endpoints[i])
            s.send_multipart(_frames(M.Hello(self.names[i], "sim", f"sim{os.getpid()}")))
            socks.append(s)
            index[s] = i
            poller.register(s, zmq.POLLIN)
        # heartbeats spread over the interval, as agents started at different times are
        hello = [_frames(M.Hello(self.names[i], "sim", f"sim{os.getpid()}"))
                 for i in range(opts.count)]
        next_hello = time.monotonic() + HELLO_AGAIN
        hb = opts.heartbeat
        beats = deque((t_start + hb * (i + 1) / opts.count, i) for i in range(opts.count))
        heartbeat = _frames(M.Heartbeat(0))
        last_status = 0.0
        while not self.stop:
            now = time.monotonic()
            if now >= next_hello and self.stats["online"] < opts.count:
                for i, answered in enumerate(hello_answered):
                    if not answered:
                        _send(socks[i], hello[i])
                        self.stats["hello_again"] = self.stats.get("hello_again", 0) + 1
                next_hello = now + HELLO_AGAIN
            while beats and beats[0][0] <= now:
                due, i = beats.popleft()
                _send(socks[i], heartbeat)
                self.stats["heartbeats"] += 1
                beats.append((max(due + hb, now), i))
            # heartbeats go out in batches every 50 ms at most: polling thousands of
            # sockets for each one would make the simulator the bottleneck
            wait = max(0.05, min(beats[0][0] - now if beats else 0.5, 0.5))
            for s, _ in poller.poll(int(wait * 1000) + 1):
                for _n in range(256):
                    try:
                        frames = s.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_message(s, index[s], frames, hello_answered)
            if now - last_status > 0.5:
                self.write_status()
                last_status = now
        for s in socks:
            s.close(0)

    def _on_message(self, s: zmq.Socket, i: int, frames: list[bytes],
                    hello_answered: list[bool]) -> None:
        try:
            mtype, body, _ = split(frames, _TYPES)
        except Exception as exc:  # noqa: BLE001 - count it, never stop
            self.stats["errors"] += 1
            self.stats["error_text"] = f"undecodable: {exc}"[:300]
            return
        if mtype == "JOBS" or mtype == "JOB":
            items = body.get("jobs", []) if mtype == "JOBS" else [body]
            ids = [j["job_id"] for j in items if isinstance(j, dict) and "job_id" in j]
            self.stats["jobs"] += len(ids)
            for k in range(0, len(ids), RESULT_BATCH):
                group = ids[k:k + RESULT_BATCH]
                bodies = [(f'{{"job_id":"{j}","status":"success","rc":0,"stdout":"",'
                           f'"stderr":"","exec_time":0.0,"cached":false}}').encode()
                          for j in group]
                _send(s, batch("RESULTS", bodies))
                self.unacked.update(group)
                self.stats["results"] += len(group)
        elif mtype == "ACK":
            ids = body.get("job_ids", [])
            self.stats["acked"] += len(ids)
            self.unacked.difference_update(ids)
        elif mtype == "ENROLLED":
            if body.get("state") == "accepted" and not hello_answered[i]:
                hello_answered[i] = True
                self.stats["online"] += 1
                if self.stats["online"] == self.opts.count:
                    self.stats["t_online"] = time.time() - self.stats["serve_started"]
                    self.stats["phase"] = "serving"
        elif mtype == "REVOKED":
            self.stats["revoked"] += 1
        elif mtype == "ERROR":
            self.stats["errors"] += 1
            self.stats["error_text"] = str(body)[:300]


def _send(s: zmq.Socket, frames: list[bytes]) -> None:
    try:
        s.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        pass  # queue full: the agent would keep it; the benchmark counts what is lost


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="HOST:PORT of the server (loopback)")
    ap.add_argument("--token", required=True, help="a join token with --uses >= COUNT")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--heartbeat", type=float, default=5.0)
    ap.add_argument("--prefix", default="sim")
    ap.add_argument("--status", required=True, help="JSON status file, rewritten often")
    ap.add_argument("--io-threads", type=int, default=1)
    opts = ap.parse_args()
    if not opts.server.startswith("127.0.0.1:"):
        print("simnodes: loopback only (--server 127.0.0.1:PORT)", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sim = Sim(opts)

    def _stop(*_: object) -> None:
        sim.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sim.enroll()
        sim.write_status()
        if not sim.stop:
            sim.serve()
    finally:
        sim.stats["phase"] = "stopped"
        sim.write_status()
        sim.ctx.destroy(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
