#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
# Each phase says what it does and how long the run has taken so far.
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { echo "==> [${SECONDS}s] $*"; }

# Real servers the tests start on loopback: redis-server, nginx (proxy and load-balancer
# tests) and Chromium (browser tests), all from Debian's packages; curl and jq for the
# README's walkthrough.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  phase "1/4 installing ${missing[*]} from Debian's packages (a bare machine downloads a few hundred MB)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  phase "1/4 Debian packages already installed (redis-server, nginx, chromium, curl, jq)"
fi

phase "2/4 installing the locked Python packages into .venv"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .

phase "3/4 linting: ruff, mypy --strict, and the structure (no import cycle, no oversized module)"
.venv/bin/ruff check relay tests
.venv/bin/mypy
.venv/bin/python scripts/check_structure.py

# One worker per core (pytest-xdist), each test file on one worker so that a module's
# browser or proxy starts once; every server takes its own free port. `-n 0` runs serially.
phase "4/4 the test suite (real redis-server, nginx, Chromium, uvicorn; about 8 minutes on 2 cores)"
.venv/bin/pytest -n auto --dist loadfile "$@"
phase "done"
