# Shared by scripts/demo and scripts/test: make .venv and install the project
# (with its test extras) when it is missing or pyproject.toml changed.  Each step that
# runs says so in one line on stderr (the first set-up takes a while); none when there
# is nothing to do.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
step() { echo "setup: $*" >&2; }
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "director needs Python 3.11+ ($py is $("$py" --version 2>&1))" >&2; exit 1
fi
stamp="$venv/.installed"
fresh=0
if [ ! -x "$venv/bin/python" ]; then
  step "creating .venv with $("$py" --version 2>&1)"
  if ! "$py" -m venv "$venv"; then
    rm -rf "$venv"
    echo "setup: '$py -m venv' failed: install the venv module (Debian/Ubuntu: apt install python3-venv)" >&2
    exit 1
  fi
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  n="$("$venv/bin/python" -c 'import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(len(p["dependencies"]) + len(p["optional-dependencies"]["test"]))' "$root/pyproject.toml")"
  step "installing director and its $n packages (with what they need) into .venv with pip"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[test]"
  touch "$stamp"
  fresh=1
fi
export PATH="$venv/bin:$PATH"
# Byte-compile the package (the editable install does not, and PYTHONDONTWRITEBYTECODE
# may forbid writing .pyc on import): every `director` start-up then skips compiling.
[ "$fresh" = 1 ] && step "compiling the package"
"$venv/bin/python" -m compileall -q "$root/director" >/dev/null 2>&1 || true
