#!/usr/bin/env bash
# Installs what the console's browser test (tools/tests/console.rs) runs, idempotently,
# on a clean Debian machine: Debian's chromium, and a Python virtualenv with PyPI's
# playwright (its driver only: the browser is Debian's, never `playwright install`).
# What is already there is kept.
#
# Usage: setup.sh DIR   (the virtualenv goes to DIR/venv; DIR/setup.lock serializes
# concurrent test processes). Prints the virtualenv's python on its last line.
# Exits non-zero with a message naming what could not be installed: the test then fails,
# it never passes without a browser.
set -euo pipefail

dir="${1:?usage: setup.sh DIR}"
mkdir -p "$dir"
venv="$dir/venv"

fail() {
  echo "console test setup FAILED: $*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

# The lock every test's apt-get waits on (tools/tests/common/kcat.rs takes it too).
apt_lock=/tmp/shardlog-tests-apt.lock
apt_updated=""
apt_install() {
  # An install from a stale or missing package list fails: update once, then retry.
  if as_root flock "$apt_lock" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$dir/apt.log" 2>&1; then
    return 0
  fi
  if [ -z "$apt_updated" ]; then
    apt_updated=1
    as_root flock "$apt_lock" apt-get update -qq >>"$dir/apt.log" 2>&1 || true
    as_root flock "$apt_lock" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$dir/apt.log" 2>&1 && return 0
  fi
  return 1
}

exec 9>"$dir/setup.lock"
flock 9

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (apt-get install chromium)" >&2
  apt_install chromium || fail "apt-get install chromium: $(tail -n 5 "$dir/apt.log")"
fi

if ! "$venv/bin/python" -c "import playwright.sync_api" >/dev/null 2>&1; then
  python=""
  for candidate in python3.11 python3 python3.12 python3.13; do
    if command -v "$candidate" >/dev/null 2>&1; then
      python="$candidate"
      break
    fi
  done
  if [ -z "$python" ]; then
    apt_install python3 python3-venv || fail "apt-get install python3 python3-venv: $(tail -n 5 "$dir/apt.log")"
    python=python3
  fi
  if ! "$venv/bin/python" -c "" >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >"$dir/venv.log" 2>&1; then
      apt_install python3-venv || fail "apt-get install python3-venv: $(tail -n 5 "$dir/apt.log")"
      rm -rf "$venv"
      "$python" -m venv "$venv" >"$dir/venv.log" 2>&1 || fail "$python -m venv: $(tail -n 5 "$dir/venv.log")"
    fi
  fi
  echo "installing playwright (pip) into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check playwright >"$dir/pip.log" 2>&1 ||
    fail "pip install playwright: $(tail -n 5 "$dir/pip.log")"
  "$venv/bin/python" -c "import playwright.sync_api" || fail "playwright does not import"
fi

echo "$venv/bin/python"
