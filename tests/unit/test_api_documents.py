"""director.documents and director.api without a server: the typed documents are the
--json documents, a document of the wrong shape is one ProtocolError, a bad submission
fails before any connection, and ``import director.api`` stays small."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from director import api
from director.documents import Job, JobSummary, Node, Submission, jobs_of, nodes_of
from director.errors import ConnectionFailed, DirectorError, DSLError, ProtocolError

JOB = {"id": "j1", "orchestration": "o1", "verb": "RUN", "summary": "RUN echo hi",
       "instruction": {"verb": "RUN"}, "created": 1.5, "targets": ["web1"],
       "status": "failed", "counts": {"failed": 1},
       "results": {"web1": {"status": "failed", "rc": 3, "stdout": "hi\n", "stderr": "",
                            "cached": False, "exec_time": 0.01, "roundtrip_time": 0.02,
                            "transfer": None, "error": None, "finished": 2.0}}}


def test_a_job_reads_as_attributes_and_dumps_as_its_json():
    job = Job(JOB)
    assert json.loads(json.dumps(job)) == JOB and job == JOB
    assert (job.id, job.status, job.ok, job.done, job.orchestration) == \
        ("j1", "failed", False, True, "o1")
    r = job.results["web1"]
    assert (r.status, r.rc, r.stdout, r.ok, r.cached, r.error, r.transfer) == \
        ("failed", 3, "hi\n", False, False, "", None)
    assert "Job(" in repr(job)


def test_running_job_is_not_done():
    assert not Job({**JOB, "status": "running"}).done
    assert not Job({**JOB, "status": "queued"}).done


@pytest.mark.parametrize(("make", "bad"), [
    (Job, []), (Job, {"id": "x", "status": "success"}), (Job, {**JOB, "results": []}),
    (Job, {**JOB, "results": {"web1": "ok"}}), (Job, {**JOB, "results": {"web1": {}}}),
    (Node, {"name": "web1"}), (Node, "web1"), (JobSummary, {"id": "x"}),
    (Submission, {"orch": "o", "jobs": [1]}), (Submission, {"orch": "o"}),
    (nodes_of, {"name": "web1", "state": "online"}), (jobs_of, None), (nodes_of, [None]),
])
def test_a_document_of_the_wrong_shape_is_one_protocol_error(make, bad):
    with pytest.raises(ProtocolError, match="^the server sent"):
        make(bad)


def test_node_and_submission_fields():
    n = Node({"name": "web1", "state": "offline", "last_seen": None, "address": None,
              "version": "1", "fingerprint": "abcd"})
    assert (n.name, n.online, n.last_seen, n.address, n.version) == \
        ("web1", False, None, "", "1")
    s = Submission({"orch": "o1", "jobs": ["a", "b"], "tasks": 4})
    assert (s.orchestration, s.jobs, s.tasks) == ("o1", ["a", "b"], 4)


def test_a_bad_job_fails_before_any_connection(tmp_path):
    c = api.Client(home=tmp_path / "no-server")
    with pytest.raises(DSLError, match="unknown verb 'RUNN'"):
        c.submit("RUNN x", wait=True)
    with pytest.raises(DSLError, match=r"^<command line>:2: COPY"):  # lines are numbered
        c.submit(["RUN ok", "COPY"], wait=False)
    with pytest.raises(TypeError):
        c.submit([Path("a"), "RUN x"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        c.submit("RUN x", targets=[1])  # type: ignore[list-item]
    with pytest.raises(ConnectionFailed):  # only a good submission tries to connect
        c.submit("RUN x")
    assert not (tmp_path / "no-server").exists()


def test_errors_are_in_the_director_error_tree():
    assert issubclass(api.Unsupported, DirectorError)
    assert issubclass(api.WaitTimedOut, DirectorError) and api.WaitTimedOut.exit_code == 2
    assert api.CANCEL_OP == "jobs.cancel"


def test_importing_the_api_loads_no_socket_server_or_parser_module():
    code = ("import sys, director.api; print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    director = {m for m in out if m.startswith("director")}
    assert director == {"director", "director.api", "director.documents", "director.errors"}
    assert not {"zmq", "yaml", "click", "nacl", "sqlite3"} & set(out)
