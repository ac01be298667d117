#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 (JAX 0.12 needs it; with 3.11 pip quietly installs an
# old JAX) and installs the project into it: `experiments/venv.sh [extras]` (e.g. `ray`, or
# several joined by commas: `ray,lm-eval,dev` as CI: the Ray backend, lm-evaluation-harness
# and the linter).
# Works where `python3.12` is only a pyenv shim that fails: it tries python3.13,
# python3.12, python3 and every pyenv-installed 3.12+ until one really runs.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-}

find_python() {
  local pyenv_root=""
  command -v pyenv >/dev/null 2>&1 && pyenv_root=$(pyenv root)
  for candidate in python3.13 python3.12 python3 "$pyenv_root"/versions/3.1[2-9]*/bin/python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "no Python >= 3.12 found: install one (e.g. pyenv install 3.12) and retry" >&2
  return 1
}

PY=$(find_python)
echo "using $("$PY" --version) at $PY"
"$PY" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".${extra:+[$extra]}"
echo "installed into .venv (activate with: source .venv/bin/activate)"
