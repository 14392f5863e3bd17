"""``--dry-run`` on ``orchestrate`` and ``exec`` (CONTRACT "Orchestrations"): the server
plans the submission as it would run it and answers with the plan per node: each job's
content hash (the one ``director job ID --json`` then shows for the real run), and what
each COPY would send or change on each node.  Nothing runs, nothing is stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
EXAMPLES = TESTS.parent / "director" / "examples"


@pytest.fixture
def two_nodes(mesh):
    mesh.server()
    mesh.add_node("web1")
    mesh.add_node("web2")
    return mesh


def _one_line_error(cp, *words: str) -> None:
    assert cp.returncode == 1, (cp.returncode, cp.stdout, cp.stderr)
    assert cp.stdout == ""
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("director: "), cp.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _plan(mesh, *args: str, cwd=None) -> dict:
    cp = mesh.cli(*args, "--json", timeout=60, cwd=cwd)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    return json.loads(cp.stdout)


def _copy_files(plan: dict, node: str, n: int) -> tuple[dict[str, str], dict]:
    [entry] = [e for e in next(x for x in plan["nodes"] if x["name"] == node)["plan"]
               if e["n"] == n]
    return {Path(f["path"]).name: f["status"] for f in entry["copy"]["files"]}, entry["copy"]


def test_orchestration_dry_run_matches_the_real_run(two_nodes, tmp_path: Path):
    mesh = two_nodes
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "b.txt").write_bytes(os.urandom(100_000))
    marker = tmp_path / "ran"
    dst = {n: tmp_path / f"dst-{n}" for n in ("web1", "web2")}
    orch = tmp_path / "deploy.yaml"
    orch.write_text(f"""---
- targets: [web1]
  jobs:
    - ARG: GREETING hello
    - RUN: --stdout-arg KERNEL uname -r
    - RUN: echo "${{GREETING}}" > {marker}
    - COPY: src/ {dst['web1']}/
    - RUN: echo {{{{ KERNEL }}}}
- targets: [web2]
  jobs:
    - COPY: src/ {dst['web2']}/
""")
    before = mesh.json("jobs")
    plan = _plan(mesh, "orchestrate", "--dry-run", str(orch))
    assert plan["dry_run"] is True and plan["tasks"] == 6
    assert [j["verb"] for j in plan["jobs"]] == ["ARG", "RUN", "RUN", "COPY", "RUN", "COPY"]
    assert [n["name"] for n in plan["nodes"]] == ["web1", "web2"]
    assert [e["n"] for e in plan["nodes"][0]["plan"]] == [1, 2, 3, 4, 5]
    assert [e["n"] for e in plan["nodes"][1]["plan"]] == [6]
    assert [j["unresolved"] for j in plan["jobs"]] == [[], [], [], [], ["KERNEL"], []]
    for name, n in (("web1", 4), ("web2", 6)):
        files, copy = _copy_files(plan, name, n)
        assert files == {"a.txt": "would send", "b.txt": "would send"}
        assert copy["known"] is False and copy["bytes"] == 100_006
    # nothing ran, nothing was stored
    assert not marker.exists() and not any(d.exists() for d in dst.values())
    assert mesh.json("jobs") == before

    text = mesh.cli("orchestrate", "--dry-run", str(orch), timeout=60)
    assert text.returncode == 0, text.stderr
    assert "would send (node state unknown" in text.stdout
    assert "hash decided on the node: ${KERNEL}" in text.stdout
    assert plan["jobs"][2]["hash"] in text.stdout
    assert mesh.json("jobs") == before

    # the real run: each job's hash is the one the dry run printed
    cp = mesh.cli("orchestrate", "--wait", "--json", str(orch), timeout=60)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    docs = json.loads(cp.stdout)
    assert marker.read_text() == "hello\n"
    hashes = [mesh.json("job", d["id"])["hash"] for d in docs]
    assert hashes == [j["hash"] for j in plan["jobs"]]
    assert len(set(hashes)) == 6  # the two COPYs differ by destination

    # the server remembers what it copied: the same plan now changes nothing
    again = _plan(mesh, "orchestrate", "--dry-run", str(orch))
    assert [j["hash"] for j in again["jobs"]] == hashes
    for name, n in (("web1", 4), ("web2", 6)):
        files, copy = _copy_files(again, name, n)
        assert files == {"a.txt": "unchanged", "b.txt": "unchanged"}
        assert copy["known"] is True and copy["bytes"] == 0

    # one source file changed: that file would change, on both nodes; hashes follow
    (src / "a.txt").write_text("alpha, changed\n")
    changed = _plan(mesh, "orchestrate", "--dry-run", str(orch))
    for name, n in (("web1", 4), ("web2", 6)):
        files, copy = _copy_files(changed, name, n)
        assert files == {"a.txt": "would change", "b.txt": "unchanged"}
        assert copy["bytes"] == len("alpha, changed\n")
    assert changed["jobs"][3]["hash"] != hashes[3]
    assert [j["hash"] for j in changed["jobs"][:3]] == hashes[:3]
    text = mesh.cli("orchestrate", "--dry-run", str(orch), timeout=60).stdout
    assert "would change (15 B to send)" in text and "unchanged" in text
    assert (dst["web1"] / "a.txt").read_text() == "alpha\n"  # still not sent


def test_exec_dry_run(two_nodes, tmp_path: Path):
    mesh = two_nodes
    marker = tmp_path / "exec-ran"
    before = mesh.json("jobs")
    plan = _plan(mesh, "exec", "--dry-run", "-t", "web*", f"RUN touch {marker}")
    assert plan["tasks"] == 2 and [n["name"] for n in plan["nodes"]] == ["web1", "web2"]
    [job] = plan["jobs"]
    assert job["verb"] == "RUN" and job["targets"] == ["web1", "web2"]
    text = mesh.cli("exec", "--dry-run", "-t", "web1", f"RUN touch {marker}")
    assert text.returncode == 0 and job["hash"] in text.stdout
    assert text.stdout.splitlines()[1] == "web1 (online)"
    assert not marker.exists() and mesh.json("jobs") == before

    cp = mesh.cli("exec", "--wait", "--json", "-t", "web1", f"RUN touch {marker}")
    assert cp.returncode == 0 and marker.exists()
    [doc] = json.loads(cp.stdout)
    assert mesh.json("job", doc["id"])["hash"] == job["hash"]

    # a COPY in exec: sources resolve against the working directory
    (tmp_path / "f.txt").write_text("x")
    plan = _plan(mesh, "exec", "--dry-run", "-t", "web1", f"COPY f.txt {tmp_path}/out/",
                 cwd=tmp_path)
    assert plan["nodes"][0]["plan"][0]["copy"]["files"][0]["status"] == "would send"
    assert not (tmp_path / "out").exists()


def test_bad_dry_runs_are_one_line_and_store_nothing(two_nodes, tmp_path: Path):
    mesh = two_nodes
    before = mesh.json("jobs")
    _one_line_error(mesh.cli("exec", "--dry-run", "FROB x"), "FROB")
    _one_line_error(mesh.cli("exec", "--dry-run", "POD list"), "unsupported verb POD")
    _one_line_error(mesh.cli("exec", "--dry-run", "-t", "nosuch", "RUN true"),
                    "unknown target 'nosuch'")
    _one_line_error(mesh.cli("exec", "--dry-run", f"COPY {tmp_path}/missing /tmp/x"),
                    "missing")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- jobs:\n  - RUN: echo hi\n  - FACTER: ''\n")
    _one_line_error(mesh.cli("orchestrate", "--dry-run", str(bad)), "FACTER")
    broken = tmp_path / "broken.yaml"
    broken.write_text("- jobs:\n  - RUN: echo a\n   bad: [\n")
    _one_line_error(mesh.cli("orchestrate", "--dry-run", "--json", str(broken)), "broken.yaml")
    _one_line_error(mesh.cli("orchestrate", "--dry-run", str(tmp_path / "nope.yaml")))
    assert mesh.json("jobs") == before


def _example_files() -> list[Path]:
    found = sorted((TESTS / "fixtures" / "directord").glob("*.yaml"))
    found += sorted(EXAMPLES.glob("*.yaml"))
    found.append(EXAMPLES / "Directorfile")
    return found


def test_every_example_orchestration_dry_runs(mesh):
    files = _example_files()
    assert len(files) >= 4, files
    mesh.server()
    mesh.add_node("web1")
    before = mesh.json("jobs")
    for path in files:
        cp = mesh.cli("orchestrate", "--dry-run", "-t", "web1", str(path), timeout=60)
        assert cp.returncode == 0, (path, cp.stderr)
        assert cp.stdout.startswith("dry run: "), (path, cp.stdout)
    assert mesh.json("jobs") == before
