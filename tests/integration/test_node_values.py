"""Values from a node are data (CONTRACT): end to end through a real server and node.

A node's file feeds ``RUN --stdout-arg``; later RUNs use the value in the shell form
(quoted for where it stands) and in the exec form (argv, no shell).  The injected
``touch`` must never run.  And what the node printed reaches the operator's terminal
without escape sequences, while ``--json`` keeps it raw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAYLOADS = [
    "1.0; touch {m} #",
    "$(touch {m})",
    "`touch {m}`",
    "'; touch {m}; '",
    '"; touch {m}; "',
    "{{{{ X }}}} ${{X}}",
]
PRINT_ARGV = "import sys, json; print(json.dumps(sys.argv[1:]))"


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_node_values_never_run_as_code(mesh, tmp_path: Path):
    mesh.server()
    mesh.add_node("web1")
    marker = tmp_path / "M"
    lines = []
    for i, payload in enumerate(PAYLOADS):
        value = payload.format(m=marker)
        (tmp_path / f"v{i}").write_text(value + "\n")
        lines += [
            f"RUN --stdout-arg V{i} cat {tmp_path / f'v{i}'}",
            f"RUN printf '%s\\n' ${{V{i}}}",
            f"RUN printf '%s\\n' \"v=${{V{i}}}\" 'w=${{V{i}}}'",
            f'RUN {json.dumps([sys.executable, "-c", PRINT_ARGV, "${V%d}" % i, "a{{ V%d }}b" % i])}',
        ]
    directorfile = tmp_path / "Directorfile"
    directorfile.write_text("\n".join(lines) + "\n")
    cp = mesh.cli("orchestrate", "--wait", "--json", str(directorfile), timeout=90)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    docs = _strict(cp.stdout)
    assert len(docs) == 4 * len(PAYLOADS)
    for i, payload in enumerate(PAYLOADS):
        value = payload.format(m=marker)
        _, plain, quoted, exec_form = docs[4 * i: 4 * i + 4]
        assert plain["results"]["web1"]["stdout"] == value + "\n"
        assert quoted["results"]["web1"]["stdout"] == f"v={value}\nw={value}\n"
        assert _strict(exec_form["results"]["web1"]["stdout"]) == [value, f"a{value}b"]
    assert not marker.exists(), "a value from the node ran as shell code"


def test_exec_form_and_terminal_safety_through_the_cli(mesh, tmp_path: Path):
    mesh.server()
    mesh.add_node("web1")
    marker = tmp_path / "M"
    argv = ["printf", "%s\\n", f"a; touch {marker}", "$(id)", "`id`", "it's \"q\"", "x\ny",
            "${V}", "{% raw %}{{ V }}{% endraw %}"]
    cp = mesh.cli("exec", "--wait", "--json", "RUN " + json.dumps(argv))
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    [doc] = _strict(cp.stdout)
    printed = [*argv[2:-1], "{{ V }}"]  # an unset ${V} is left as written; raw is raw
    assert doc["results"]["web1"]["stdout"] == "".join(a + "\n" for a in printed)
    assert not marker.exists()

    # a node's output with OSC (title, clipboard), CSI and CR tricks
    hostile = r"printf 'ok\033]0;owned\007\033]52;c;cm0gLXJm\033\\\033[2J\r\033[31mred\n'"
    cp = mesh.cli("exec", "--wait", "--json", "RUN " + hostile)
    [doc] = _strict(cp.stdout)
    assert "\x1b]0;owned\x07" in doc["results"]["web1"]["stdout"]  # --json: raw
    shown = mesh.cli("job", doc["id"])
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\r" not in shown.stdout and "\x07" not in shown.stdout
    body = shown.stdout.split("--- web1 stdout:", 1)[1]  # (the header shows the command)
    assert body.strip() == "okred"
    plain = mesh.cli("exec", "--wait", "RUN " + hostile)
    assert "\x1b" not in plain.stdout and "okred" in plain.stdout
