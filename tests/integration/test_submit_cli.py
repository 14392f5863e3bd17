"""How a submission is written: sources relative to the file, --target overriding the
file, comma lists, and Ctrl-C during --wait leaving the work running."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import DIRECTOR, clean_env

pytestmark = pytest.mark.integration


def test_copy_sources_in_a_file_resolve_against_its_directory(mesh, tmp_path):
    mesh.server()
    mesh.add_node("web1")
    deploy = Path(mesh.root) / "deploy"
    (deploy / "site").mkdir(parents=True)
    (deploy / "site" / "index.html").write_text("from the file's directory\n")
    dest = tmp_path / "www"
    (deploy / "site.yaml").write_text(
        f"- jobs:\n    - COPY: site/index.html {dest}/index.html\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    cp = mesh.cli("orchestrate", "--wait", str(deploy / "site.yaml"), cwd=elsewhere)
    assert cp.returncode == 0, cp.stderr
    assert (dest / "index.html").read_text() == "from the file's directory\n"
    # exec: relative to the working directory, as a shell user expects
    (elsewhere / "note.txt").write_text("from the working directory\n")
    cp = mesh.cli("exec", "--wait", f"COPY note.txt {dest}/note.txt", cwd=elsewhere)
    assert cp.returncode == 0, cp.stderr
    assert (dest / "note.txt").read_text() == "from the working directory\n"


def _ran_on(mesh, job_id: str) -> set[str]:
    doc = mesh.json("job", job_id)
    return {n for n, r in doc["results"].items() if r["status"] == "success"}


def test_target_overrides_the_file_and_takes_comma_lists(mesh):
    mesh.server()
    for name in ("web1", "web2", "db1"):
        mesh.add_node(name)
    plan = Path(mesh.root) / "plan.yaml"
    plan.write_text("- targets: [web1]\n  jobs:\n    - RUN: \"true\"\n")
    docs = mesh.json("orchestrate", "--wait", str(plan))
    assert _ran_on(mesh, docs[0]["id"]) == {"web1"}
    docs = mesh.json("orchestrate", "--wait", "--target", "db1", str(plan))
    assert _ran_on(mesh, docs[0]["id"]) == {"db1"}
    docs = mesh.json("exec", "--wait", "-t", "web2,db1", "RUN true")
    assert _ran_on(mesh, docs[0]["id"]) == {"web2", "db1"}


def test_ctrl_c_during_wait_leaves_the_job_running_and_names_it(mesh, tmp_path):
    mesh.server()
    mesh.add_node("web1")
    marker = tmp_path / "done"
    cli = subprocess.Popen(
        [*DIRECTOR, "--home", mesh.home, "exec", "--wait", f"RUN sleep 2; touch {marker}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        cwd=mesh.root)
    try:
        job_id = mesh.wait_for(lambda: next((j["id"] for j in mesh.json("jobs")
                                             if j["status"] == "running"), None),
                               timeout=10, what="the job running")
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130, err
    assert f"interrupted; the jobs go on. Follow them with: director job {job_id}" in err
    assert err.count("\n") == 1, err
    mesh.wait_for(lambda: mesh.json("job", job_id)["status"] == "success", timeout=15,
                  what="the job to finish after the CLI was interrupted")
    assert marker.exists()
    assert json.loads(mesh.cli("job", job_id, "--json").stdout)["status"] == "success"


def test_a_target_not_online_is_refused_unless_allowed(mesh):
    mesh.server()
    mesh.add_node("web1")
    mesh.add_node("db1")
    mesh.clients["db1"].stop()
    mesh.wait_for(lambda: mesh.node("db1")["state"] == "offline", timeout=15,
                  what="db1 offline")
    before = len(mesh.json("jobs"))
    cp = mesh.cli("exec", "-t", "web1,db1", "RUN true")
    assert cp.returncode == 1
    assert cp.stderr.strip() == ("director: not online: db1; run when they are back, or pass"
                                 " --allow-offline to queue the work for them")
    assert len(mesh.json("jobs")) == before            # nothing was submitted
    job_id = mesh.cli("exec", "--allow-offline", "-t", "db1", "RUN true",
                      check=True).stdout.strip()
    assert mesh.json("job", job_id)["results"]["db1"]["status"] == "queued"
    mesh.client("db1")
    mesh.wait_for(lambda: mesh.json("job", job_id)["status"] == "success", timeout=15,
                  what="the queued job to run once db1 is back")


def test_arg_env_workdir_live_for_one_submission(mesh, tmp_path):
    mesh.server()
    mesh.add_node("web1")
    plan = tmp_path / "plan"
    plan.write_text("WORKDIR deploy-here\nENV STAGE=prod\nRUN pwd; echo $STAGE\n")
    docs = mesh.json("orchestrate", "--wait", str(plan))
    out = docs[-1]["results"]["web1"]["stdout"].splitlines()
    assert out[0].endswith("/deploy-here") and out[1] == "prod"
    # an ad-hoc exec later starts from the node's defaults, not the orchestration's
    doc = mesh.json("exec", "--wait", "RUN pwd; echo \"stage=${STAGE:-none}\"")[0]
    out = doc["results"]["web1"]["stdout"].splitlines()
    assert out[0].endswith("/work") and out[1] == "stage=none"
