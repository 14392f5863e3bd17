"""`pip install .` then `director demo` works: the example orchestration and its site are
package data (issue 15 item 5), not files found only in a source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import clean_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_example_and_its_demo_runs_outside_the_tree(tmp_path):
    src = tmp_path / "src"  # a clean copy, as scripts/build-image builds: no build/ in the tree
    shutil.copytree(ROOT / "director", src / "director",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", str(wheels), str(src)],
        capture_output=True, text=True, timeout=300, env=clean_env(), cwd=tmp_path)
    if build.returncode != 0:  # pip fetches the build backend (setuptools) for the build
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    [wheel] = wheels.glob("director-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"director/examples/{p.relative_to(ROOT / 'director' / 'examples')}"
               for p in (ROOT / "director" / "examples").rglob("*") if p.is_file()}
    assert "director/examples/demo.yaml" in shipped and shipped <= names, shipped - names

    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, env=clean_env())
    assert install.returncode == 0, install.stderr
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = clean_env({"PYTHONPATH": str(target), "TMPDIR": str(tmp_path)})
    where = subprocess.run([sys.executable, "-c", "import director; print(director.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=run_dir)
    assert where.stdout.startswith(str(target)), where  # the installed copy, not the tree
    cp = subprocess.run([sys.executable, "-m", "director", "demo"], capture_output=True,
                        text=True, timeout=180, env=env, cwd=run_dir)
    assert cp.returncode == 0, (cp.stdout[-3000:], cp.stderr[-3000:])
    assert "demo finished" in cp.stdout
    assert cp.stdout.count("said: hello from") >= 6
    assert not os.listdir(run_dir)  # it wrote nothing where it was run
