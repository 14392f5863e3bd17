"""QUERY through a real server and three real agents (CONTRACT "More verbs", "Values from
nodes are data", "Templates"): directord's query shape gives every node the answers,
a hostile answer stays data on the other nodes, and a server killed -9 while jobs are
held behind a QUERY runs the rest exactly once after its restart."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

NODES = ("n1", "n2", "n3")


def _mesh(mesh) -> None:
    mesh.server()
    for n in NODES:
        mesh.add_node(n)


def _orchestrate(mesh, path: Path, rc: int = 0) -> list[dict]:
    cp = mesh.cli("orchestrate", "--wait", "--json", str(path), timeout=120)
    assert cp.returncode == rc, (cp.returncode, cp.stdout, cp.stderr)
    return json.loads(cp.stdout)


def _outputs(doc: dict) -> dict[str, str]:
    return {n: r["stdout"] for n, r in doc["results"].items()}


def test_directord_query_shape_gives_every_node_the_answers(mesh, tmp_path: Path):
    _mesh(mesh)
    orch = tmp_path / "query.yaml"
    orch.write_text("""---
- targets: [n1]
  jobs:
  - RUN: --stdout-arg address echo 10.0.0.1
- targets: [n2]
  jobs:
  - ARG: address 10.0.0.2
  - ARG: leader yes-n2
- jobs:
  - QUERY: address
  - QUERY: leader
- jobs:
  - RUN: echo "n1={{ query.n1.address }} all={{ query.values() | map(attribute='address') | select('defined') | sort | join(',') }}"
  - RUN: echo "{{ query.values() | map(attribute='leader') | select('defined') | list | first }}"
  - RUN: echo "{{ 'n3' in query }}"
""")
    docs = _orchestrate(mesh, orch)
    assert [d["status"] for d in docs] == ["success"] * len(docs), docs
    query = next(d for d in docs if d["verb"] == "QUERY")
    assert query["instruction"]["name"] == "address"
    # the answers as each node gave them: JSON, nothing where the ARG is not set
    address = _outputs(query)
    assert address == {"n1": '"10.0.0.1"\n', "n2": '"10.0.0.2"\n', "n3": ""}
    runs = [d for d in docs if d["verb"] == "RUN" and "query" in d["instruction"]["command"]]
    assert [_outputs(d) for d in runs] == [
        dict.fromkeys(NODES, "n1=10.0.0.1 all=10.0.0.1,10.0.0.2\n"),
        dict.fromkeys(NODES, "yes-n2\n"),
        dict.fromkeys(NODES, "False\n"),   # n3 answered nothing: it has no entry
    ]


def test_directord_functional_query_file_shape(mesh, tmp_path: Path):
    """directord's functional query test: one node (--run-once) reads a file into an ARG,
    every node is QUERYed, and every node decodes the one answer there is."""
    _mesh(mesh)
    sources = {name: tmp_path / name for name in ("release", "resolv", "hosts")}
    for name, path in sources.items():
        path.write_text(f"{name} line 1\n{name} 'line' $2\n")
    steps = "".join(f"""
- jobs:
  - RUN: >-
      --run-once
      --stdout-arg base64_{name}
      base64 -w 0 {path}
  - QUERY: base64_{name}
""" for name, path in sources.items())
    reads = "".join(f"""
  - RUN: >-
      echo "{{{{ query.values() | map(attribute='base64_{name}') | select('defined') | list | first }}}}" | base64 -d
""" for name in sources)
    orch = tmp_path / "functional-tests-query.yaml"
    orch.write_text(f"---{steps}\n- jobs:{reads}")
    docs = _orchestrate(mesh, orch)
    assert [d["status"] for d in docs] == ["success"] * len(docs), docs
    answered = [d for d in docs if d["verb"] == "QUERY"]
    # one node has each value; the others answer nothing (not a failure)
    assert [sorted(_outputs(d).values()).count("") for d in answered] == [2, 2, 2]
    for doc, path in zip(docs[-3:], sources.values()):
        assert _outputs(doc) == dict.fromkeys(NODES, path.read_text())


def test_directord_key_distribution_shape_renders_query_in_a_blueprint(mesh, tmp_path: Path):
    """directord's ssh-keygen-distribute: every node's key is QUERYed, then an ADD
    --blueprint file loops over the answers on every node."""
    _mesh(mesh)
    files = tmp_path / "files"
    files.mkdir()
    (files / "authorized_keys").write_text(
        "# keys of every node\n"
        "{% for key in (query.values() | map(attribute='director_ssh_key')) %}\n"
        "{{ key }}\n{%- endfor %}\n")
    out = tmp_path / "out"
    orch = tmp_path / "keys.yaml"
    orch.write_text("---\n" + "".join(f"- targets: [{n}]\n  jobs:\n  - ARG: me {n}\n"
                                      for n in NODES) + f"""- jobs:
  - RUN: --skip-cache --stdout-arg director_ssh_key echo "ssh-ed25519 AAAA $(echo key) ${{me}}"
  - QUERY: director_ssh_key
  - ADD: --blueprint files/authorized_keys {out}/${{me}}/
""")
    docs = _orchestrate(mesh, orch)
    assert [d["status"] for d in docs] == ["success"] * len(docs), docs
    for n in NODES:
        lines = (out / n / "authorized_keys").read_text().splitlines()
        assert lines[0] == "# keys of every node"
        assert sorted(filter(None, lines[1:])) == [f"ssh-ed25519 AAAA key {m}" for m in NODES]


def test_a_hostile_answer_is_data_on_every_other_node(mesh, tmp_path: Path):
    _mesh(mesh)
    mark = tmp_path / "pwned"
    orch = tmp_path / "hostile.yaml"
    # n1's values look like code and like a template; they came from a node
    orch.write_text(f"""---
- targets: [n1]
  jobs:
  - RUN: --stdout-arg v printf '%s' '$(touch {mark})'
  - RUN: "--stdout-arg t printf '%s' '{{% raw %}}{{{{ 7*7 }}}}{{% endraw %}}'"
- jobs:
  - QUERY: v
  - QUERY: t
  - RUN: printf '%s|%s' {{{{ query.n1.v }}}} "{{{{ query.n1.t }}}}"
  - RUN: ["printf", "%s", "{{{{ query.n1.v }}}}"]
- targets: [n2]
  jobs:
  - ADD: --blueprint files/page {tmp_path}/out/
""")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "page").write_text("v={{ query.n1.v }} t={{ query.n1.t }}\n")
    docs = _orchestrate(mesh, orch)
    assert [d["status"] for d in docs] == ["success"] * len(docs), docs
    assert (tmp_path / "out" / "page").read_text() == f"v=$(touch {mark}) t={{{{ 7*7 }}}}\n"
    shell, exec_form = docs[-3], docs[-2]  # on every node; the file on n2
    assert _outputs(shell) == dict.fromkeys(NODES, f"$(touch {mark})|{{{{ 7*7 }}}}")
    assert _outputs(exec_form) == dict.fromkeys(NODES, f"$(touch {mark})")
    assert not mark.exists()


def _job(mesh, job_id: str) -> dict:
    return mesh.ctl("jobs.get", {"id": job_id})


def test_server_kill9_while_jobs_are_held_behind_a_query(mesh, tmp_path: Path):
    """n3 is slow to reach the QUERY; the server is killed -9 while n1's and n2's later
    jobs are held, and restarted: the rest runs once on every node, with the answers."""
    _mesh(mesh)
    side = tmp_path / "side"
    orch = tmp_path / "held.yaml"
    orch.write_text(f"""---
{"".join(f'''- targets: [{n}]
  jobs:
  - ARG: me {n}
''' for n in NODES)}- targets: [n3]
  jobs:
  - RUN: --skip-cache sleep 4
- jobs:
  - QUERY: me
  - RUN: echo "${{me}} {{{{ query.values() | map(attribute='me') | sort | join(',') }}}}" >> {side}
""")
    cp = mesh.cli("orchestrate", "--json", str(orch))
    assert cp.returncode == 0, cp.stderr
    rows = mesh.ctl("jobs.list", {"limit": 100})
    query = next(r["id"] for r in rows if r["verb"] == "QUERY")
    run = next(r["id"] for r in rows if r["verb"] == "RUN" and "echo" in r["summary"])

    def answered() -> bool:
        res = _job(mesh, query)["results"]
        return res["n1"]["status"] == res["n2"]["status"] == "success"
    mesh.wait_for(answered, 15, "n1 and n2 to answer the QUERY")
    held = _job(mesh, run)["results"]
    assert {n: r["status"] for n, r in held.items()} == dict.fromkeys(NODES, "queued")
    assert not side.exists()  # nothing after the QUERY was sent
    mesh.server_proc.signal(signal.SIGKILL)
    mesh.server_proc.wait(timeout=5)
    time.sleep(1)
    mesh.server()

    def finished() -> bool:
        return _job(mesh, run)["status"] not in ("queued", "running")
    mesh.wait_for(finished, 30, "the held RUN to end after the restart")
    doc = _job(mesh, run)
    assert doc["status"] == "success", doc
    lines = sorted(side.read_text().splitlines())
    assert lines == [f"{n} n1,n2,n3" for n in NODES]  # each node once, with every answer
    time.sleep(1.5)  # nothing runs again later (resends, reconnects)
    assert sorted(side.read_text().splitlines()) == lines
