"""Every ``--json`` the CLI has prints exactly one strict JSON document on stdout (CONTRACT
"Machine-readable output"; issue 11 finding 11): no NaN/Infinity, nothing else on stdout.

The list of commands is read from the CLI itself, so a new ``--json`` command that this
test does not run fails it.
"""

from __future__ import annotations

import json

import click

from director.cli.main import cli

def _strict(text: str, what: str):
    def refuse(name: str):
        raise AssertionError(f"{what}: non-strict JSON constant {name} in {text[:200]!r}")
    assert text.endswith("\n") and text.count("\n") == 1, f"{what}: not one line: {text[:300]!r}"
    try:
        return json.loads(text, parse_constant=refuse)  # raises on anything after the document
    except ValueError as exc:
        raise AssertionError(f"{what}: stdout is not one JSON document ({exc}): "
                             f"{text[:300]!r}") from None


def _json_commands() -> set[str]:
    found: set[str] = set()

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
        if (not isinstance(cmd, click.Group) or cmd.invoke_without_command) \
                and any("--json" in getattr(p, "opts", ()) for p in cmd.params):
            found.add(" ".join(path))  # a group run without a sub-command too (`nodes`)
    walk(cli, ())
    return found


def test_every_json_command_prints_one_strict_document(mesh, tmp_path):
    mesh.server()
    mesh.add_node("web1")
    ran: dict[str, object] = {}

    def check(name: str, *args: str, home: str | None = None, rc: int | tuple = 0):
        cp = mesh.cli(*args, home=home, timeout=60)
        ok = (rc,) if isinstance(rc, int) else rc
        assert cp.returncode in ok, f"{name}: exit {cp.returncode}: {cp.stdout} {cp.stderr}"
        ran[name] = doc = _strict(cp.stdout, name)
        return doc

    node_home = mesh.homes["web1"]
    check("keygen", "keygen", "--json", home=str(tmp_path / "fresh"))
    tok = check("token create", "token", "create", "--json", "--uses", "2")
    assert {"id", "token", "expires", "command"} <= set(tok)
    check("token list", "token", "list", "--json")
    enrolled = mesh.enroll("web2", token=tok["token"], extra=["--json"])
    assert enrolled.returncode == 0, enrolled.stderr
    ran["enroll"] = _strict(enrolled.stdout, "enroll")
    pending = mesh.enroll("pend1", server_key=mesh.server_key(), extra=["--json"])
    assert _strict(pending.stdout, "enroll (pending)")["state"] == "pending"
    for verb in ("reject", "accept", "revoke", "delete"):
        check(f"keys {verb}", "keys", verb, "pend1", "--json")
    check("keys list", "keys", "list", "--json")
    check("keys server", "keys", "server", "--json")
    check("nodes", "nodes", "--json")
    labelled = check("nodes label", "nodes", "label", "web1", "role=web", "--json")
    assert labelled == {"name": "web1", "labels": {"role": "web"}}
    one = check("node", "node", "web1", "--json")
    assert {"name", "state", "labels", "facts", "fingerprint", "last_seen"} <= set(one)
    check("config", "config", "--json")
    check("health", "health", "--json")
    check("health (node)", "health", "--json", home=node_home)
    check("health (nothing)", "health", "--json", home=str(tmp_path / "empty"), rc=1)
    submitted = check("exec", "exec", "--target", "web1", "--json", "RUN echo nowait")
    waited = check("exec --wait", "exec", "--wait", "--target", "web1", "--json",
          "RUN printf 'x\\033]0;t\\007 \\377\\n'")
    check("exec --wait (failed)", "exec", "--wait", "--target", "web1", "--json",
          "RUN exit 3", rc=2)
    f = tmp_path / "Directorfile"
    f.write_text("RUN echo one\nRUN [\"echo\", \"two\"]\n")
    check("orchestrate --wait", "orchestrate", "--wait", "--target", "web1", "--json", str(f))
    orch = check("orchestrate", "orchestrate", "--target", "web1", "--json", str(f))
    assert orch["id"] == orch["orchestration"] and len(orch["jobs"]) == 2
    (tmp_path / "x\033]0;t\007.txt").write_text("copied")
    plan = check("exec (--dry-run)", "exec", "--dry-run", "--target", "web1", "--json",
                 f"COPY {tmp_path}/x* /tmp/never-sent/")
    assert plan["dry_run"] is True and plan["nodes"][0]["plan"][0]["copy"]["files"]
    check("orchestrate (--dry-run)", "orchestrate", "--dry-run", "--json", str(f))
    check("jobs", "jobs", "--json")
    check("events", "events", "--since", "1h", "--json")
    job_id = submitted["jobs"][0] if isinstance(submitted, dict) else submitted[0]
    check("job", "job", job_id, "--json")
    check("job last", "job", "last", "--json")
    summary = check("job (orchestration)", "job", orch["id"], "--json")
    assert summary["kind"] == "orchestration" and summary["jobs"] == orch["jobs"]
    assert len(check("job --all (orchestration)", "job", orch["id"], "--all", "--json")) == 2
    check("job show", "job", "show", job_id, "--json")
    check("job cancel", "job", "cancel", job_id, "--json")
    check("job retry", "job", "retry", waited[0]["id"], "--json")
    analysis = check("analyze", "analyze", "last", "--json")
    assert {"id", "wall_time", "exec_time_total", "nodes", "jobs"} <= set(analysis)
    check("analyze (job)", "analyze", waited[0]["id"], "--json")
    assert check("jobs purge", "jobs", "purge", "--keep", "1", "--json")["jobs"] >= 1

    covered = {name.split(" (")[0].replace(" --wait", "") for name in ran}
    commands = _json_commands()
    assert {"nodes", "exec", "keys list", "token create"} <= commands  # the walk finds them
    missing = commands - covered
    assert not missing, f"--json commands this test does not run yet: {sorted(missing)}"
