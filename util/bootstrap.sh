# Sourced by run_llama_train.sh and run_tests.sh: makes sure a Python with tinytitan
# and what the caller needs exists, installing on first use, and sets $PYTHON to it.
#  - the caller sets _extras: "" (training: the package and its runtime dependencies) or
#    "dev" (the tests: pytest, ruff, lm-eval, llama-models on top);
#  - a Python that already has torch (yours, or $PYTHON) is used as it is: tinytitan is
#    installed into it in editable mode, torch is left alone;
#  - otherwise a virtual environment .venv is made with torch 2.13 and tinytitan.
# The stamp .installed records the Python, pyproject.toml's hash and the extras installed.
# Reinstalls when pyproject.toml changed or an extra is missing; never drops an extra
# (training after the tests keeps the dev tools; the tests after training add them).
# Several nodes starting at once on a shared filesystem: one installs, the others wait
# for it (flock on .bootstrap.lock), then find everything in place.

_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_extras="${_extras:-}"
_stamp_file="$_repo/.installed"
_prefix_of() { "$1" -c 'import sys; print(sys.prefix)'; }
_hash() { sha256sum "$_repo/pyproject.toml" | cut -c1-16; }
_read_stamp() { # sets _stamp_prefix, _stamp_hash and _stamp_extras (comma-separated); empty without a stamp
  _stamp_prefix="" _stamp_hash="" _stamp_extras=""
  [ -f "$_stamp_file" ] && IFS='|' read -r _stamp_prefix _stamp_hash _stamp_extras < "$_stamp_file"
  return 0
}
_stamped_extras() { # the extras already installed into $PYTHON, whatever pyproject.toml's hash was
  _read_stamp
  [ "$_stamp_prefix" = "$(_prefix_of "$PYTHON")" ] && echo "$_stamp_extras" | tr ',' ' '
  return 0
}
_installed() {
  [ -n "${PYTHON:-}" ] || return 1
  _read_stamp
  [ "$_stamp_prefix" = "$(_prefix_of "$PYTHON")" ] && [ "$_stamp_hash" = "$(_hash)" ] || return 1
  local want
  for want in $_extras; do
    case ",$_stamp_extras," in *",$want,"*) ;; *) return 1 ;; esac
  done
  # tinytitan, torch and torchtitan are found, without importing them (importing torch takes seconds,
  # longer than a finished run's rerun or `--help` needs): a broken install fails at its import instead.
  "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))" \
    tinytitan.register torch torchtitan >/dev/null 2>&1
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
_say() { echo "tinytitan: $*" >&2; }

_given_python="${PYTHON:-}"
_find_python
if ! _installed; then
  if command -v flock >/dev/null 2>&1; then
    exec {_lock_fd}>>"$_repo/.bootstrap.lock"
    flock "$_lock_fd" # another node or process may be installing right now: wait for it
  fi
  _find_python # what the other installer made
  if [ -z "$PYTHON" ]; then
    _say "no Python with torch found; creating $_repo/.venv (first run only)"
    python3 -m venv "$_repo/.venv" || { _say "error: python3 -m venv failed: install python3-venv"; exit 1; }
    PYTHON="$_repo/.venv/bin/python"
    _step=1
    _say "[1/3] upgrading pip in .venv"
    "$PYTHON" -m pip install -q --upgrade pip
    _say "[2/3] installing torch 2.13 (the largest download: up to a few GB with CUDA)"
    "$PYTHON" -m pip install --progress-bar on "torch==2.13.0" || { _say "error: pip install torch failed"; exit 1; }
  fi
  if ! _installed; then
    _all="$(printf '%s\n' $_extras $(_stamped_extras) | sort -u | paste -sd, -)"
    _what="tinytitan and its runtime dependencies"
    [ -n "$_all" ] && _what="tinytitan with [$_all] (the test and evaluation tools)"
    _say "${_step:+[3/3] }installing $_what into $(_prefix_of "$PYTHON")"
    "$PYTHON" -m pip install --progress-bar on -e "$_repo${_all:+[$_all]}" \
      || { _say "error: pip install -e . failed (see above)"; exit 1; }
    echo "$(_prefix_of "$PYTHON")|$(_hash)|$_all" > "$_stamp_file"
    _say "installed; the next runs start at once"
  fi
  if [ -n "${_lock_fd:-}" ]; then
    exec {_lock_fd}>&-
    unset _lock_fd
  fi
fi
export PYTHON
