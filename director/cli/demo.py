"""``director demo``: a throw-away local mesh that shows what Director does.

A server and three clients on loopback, each with its own home in a temp
directory, enrolled by one join token; the example orchestration runs twice
(the second run is answered from the nodes' caches), then everything stops.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

# shutil, signal, socket, subprocess and tempfile are imported where used: every
# other director command loads this module, and they cost ~10 ms of start-up.

# Package data, so an installed director has it too (examples/ in a checkout links here).
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Mesh:
    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.procs: list = []
        self.base = [sys.executable, "-m", "director"]

    def cli(self, home: str, *args: str, check: bool = True, cwd: str | None = None):
        import subprocess

        p = subprocess.run([*self.base, "--home", str(self.root / home), *args],
                           capture_output=True, text=True, timeout=120, cwd=cwd)
        if check and p.returncode not in (0,):
            raise click.ClickException(f"'director {' '.join(args[:2])}' failed: {p.stderr.strip()}")
        return p

    def start(self, home: str, *args: str) -> None:
        import subprocess

        log = open(self.root / f"{home}.log", "w")
        self.procs.append(subprocess.Popen(
            [*self.base, "--home", str(self.root / home), "--heartbeat-interval", "1", *args],
            stdout=subprocess.DEVNULL, stderr=log))

    def wait_for(self, what: str, check, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise click.ClickException(f"demo: {what} did not happen within {timeout:g} s"
                                   f" (logs in {self.root})")

    def stop(self) -> None:
        import signal
        import subprocess

        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _summary(docs: list[dict], names: list[str]) -> None:
    """One row per job, one column per node: status, (cached), exec time."""
    from director.cli.output import safe_text, seconds, table

    rows = []
    for d in docs:
        cells = []
        for n in names:
            r = d["results"].get(n)
            if r is None:
                cells.append("-")
                continue
            tag = "cached" if r["cached"] else seconds(r["exec_time"])
            t = r.get("transfer")
            if t:
                tag = f"sent {t['bytes_sent']}/{t['bytes_total']} B"
            cells.append(f"{r['status']} ({tag})")
        rows.append([d["summary"][:44], *cells])
    click.echo(table(["JOB", *names], rows))
    echo = next((d for d in docs if "echo" in d["summary"]), None)
    if echo:
        for n in names:
            out = (echo["results"].get(n) or {}).get("stdout", "").strip()
            click.echo(f"  {safe_text(n, inline=True)} said: {safe_text(out)}")


def _section(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


@click.command()
@click.option("--file", "example", default=str(EXAMPLE), show_default=True,
              help="Orchestration to run.")
@click.option("--keep", is_flag=True, help="Keep the temp homes and logs.")
def demo(example: str, keep: bool) -> None:
    """Start a local mesh (server + 3 clients), run the example twice, tear down."""
    if not Path(example).is_file():
        raise click.ClickException(f"example orchestration {example} not found (use --file)")
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="director-demo-", dir="/tmp"))
    port = _free_port()
    mesh = _Mesh(root, port)
    try:
        _section(f"server on 127.0.0.1:{port} (home {root}/server)")
        mesh.start("server", "--bind", f"tcp://127.0.0.1:{port}", "server")
        mesh.wait_for("server start", lambda: mesh.cli("server", "health", check=False).returncode == 0)
        tok = json.loads(mesh.cli("server", "token", "create", "--uses", "3", "--ttl", "10m",
                                  "--address", f"127.0.0.1:{port}", "--json").stdout)
        click.echo(f"join token {tok['id']} created (3 uses); each node runs:\n  {tok['command'][:60]}...")
        names = ["node1", "node2", "node3"]
        for name in names:
            out = mesh.cli(name, "--name", name, "enroll", "--server", f"127.0.0.1:{port}",
                           "--token", tok["token"])
            click.echo(out.stdout.strip())
            mesh.start(name, "client")

        def all_online() -> bool:
            rows = json.loads(mesh.cli("server", "nodes", "--json").stdout)
            return sum(r["state"] == "online" for r in rows) == len(names)

        mesh.wait_for("3 nodes online", all_online)
        _section("director nodes")
        click.echo(mesh.cli("server", "nodes").stdout.rstrip())
        _section("director keys list")
        click.echo(mesh.cli("server", "keys", "list").stdout.rstrip())
        runs = ("first run", "second run: unchanged jobs answered from each node's cache,"
                " unchanged files not sent")
        for attempt in runs:
            _section(f"director orchestrate --wait {Path(example).name}  ({attempt})")
            t0 = time.monotonic()
            p = mesh.cli("server", "orchestrate", "--wait", "--json", str(Path(example).resolve()),
                         check=False, cwd=str(Path(example).resolve().parent))
            if p.returncode not in (0, 2) or not p.stdout.strip():
                raise click.ClickException(f"orchestration failed: {p.stderr.strip()}")
            _summary(json.loads(p.stdout), names)
            click.echo(f"({time.monotonic() - t0:.2f}s)")
            if p.returncode != 0:
                raise click.ClickException("a job failed on some node (see above)")
        _section("director job last  (the orchestration's summary)")
        click.echo(mesh.cli("server", "job", "last").stdout.rstrip())
        last = json.loads(p.stdout)[-1]
        _section("director job ID  (one job's per-node detail)")
        click.echo(mesh.cli("server", "job", last["id"]).stdout.rstrip())
    finally:
        mesh.stop()
        if keep:
            click.echo(f"\nhomes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    click.echo("\ndemo finished: server and clients stopped.")


COMMANDS = [demo]
