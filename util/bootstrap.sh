# Sourced by run_llama_train.sh and run_tests.sh: makes sure a Python with tinytitan
# and its dependencies exists, installing on first use, and sets $PYTHON to it.
#  - a Python that already has torch (yours, or $PYTHON) is used as it is: tinytitan is
#    installed into it in editable mode, torch is left alone;
#  - otherwise a virtual environment .venv is made with torch 2.13 and tinytitan.
# Reinstalls only when pyproject.toml changed since the last install.
# Several nodes starting at once on a shared filesystem: one installs, the others wait
# for it (flock on .bootstrap.lock), then find everything in place.

_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_stamp_of() { echo "$("$1" -c 'import sys; print(sys.prefix)')|$(sha256sum "$_repo/pyproject.toml" | cut -c1-16)"; }
_stamp_file="$_repo/.installed"
_installed() {
  [ -n "${PYTHON:-}" ] && [ "$(cat "$_stamp_file" 2>/dev/null)" = "$(_stamp_of "$PYTHON")" ] \
    && "$PYTHON" -c "import tinytitan.register" >/dev/null 2>&1
}
_find_python() {
  if [ -n "${_given_python:-}" ]; then
    PYTHON="$_given_python"
  elif [ -x "$_repo/.venv/bin/python" ]; then
    PYTHON="$_repo/.venv/bin/python"
  elif python3 -c "import torch" >/dev/null 2>&1; then
    PYTHON="$(command -v python3)"
  else
    PYTHON=""
  fi
}

_given_python="${PYTHON:-}"
_find_python
if ! _installed; then
  if command -v flock >/dev/null 2>&1; then
    exec {_lock_fd}>>"$_repo/.bootstrap.lock"
    flock "$_lock_fd" # another node or process may be installing right now: wait for it
  fi
  _find_python # what the other installer made
  if [ -z "$PYTHON" ]; then
    echo "tinytitan: no Python with torch found; creating $_repo/.venv (first run only)" >&2
    python3 -m venv "$_repo/.venv" || { echo "tinytitan: error: python3 -m venv failed: install python3-venv" >&2; exit 1; }
    PYTHON="$_repo/.venv/bin/python"
    "$PYTHON" -m pip install -q --upgrade pip
    "$PYTHON" -m pip install -q "torch==2.13.0" || { echo "tinytitan: error: pip install torch failed" >&2; exit 1; }
  fi
  if ! _installed; then
    echo "tinytitan: installing tinytitan and its dependencies into $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
    "$PYTHON" -m pip install -q -e "$_repo[dev]" || { echo "tinytitan: error: pip install -e . failed (see above)" >&2; exit 1; }
    _stamp_of "$PYTHON" > "$_stamp_file"
  fi
  if [ -n "${_lock_fd:-}" ]; then
    exec {_lock_fd}>&-
    unset _lock_fd
  fi
fi
export PYTHON
