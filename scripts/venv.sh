# Sourced by scripts/check and scripts/demo: make a venv and install the project into it from a
# lock file (requirements/*.txt, every package pinned with its hashes), so that two installs on
# two days are the same. The editable install builds with the pinned setuptools of the lock.
#   locked_venv VENV LOCK      VENV is created with $PYTHON (default python3) if missing.
locked_venv() {
  local venv=$1 lock=$2
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
  "${pip[@]}" install --require-hashes -r "$lock"
  "${pip[@]}" install --no-deps --no-build-isolation -e .
}
