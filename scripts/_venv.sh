# Shared by scripts/demo and scripts/test: make .venv and install the project
# (with its test extras) when it is missing or pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "director needs Python 3.11+ ($py is $("$py" --version 2>&1))" >&2; exit 1
fi
stamp="$venv/.installed"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[test]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
# Byte-compile the package (the editable install does not, and PYTHONDONTWRITEBYTECODE
# may forbid writing .pyc on import): every `director` start-up then skips compiling.
"$venv/bin/python" -m compileall -q "$root/director" >/dev/null 2>&1 || true
