#!/usr/bin/env bash
# One entry point for developers and users of a checkout:
#   ./dev.sh editor [GRAPH]   set up, then open the editor (default: the graph it had open, else the template)
#   ./dev.sh test [ARGS]      set up (with the browser for the editor tests), then run every test, a worker
#                             per core (NODEFLOW_TEST_WORKERS=0: in one process); ARGS go to pytest
#   ./dev.sh setup            only set up
# Set-up is idempotent: it creates .venv and installs the pinned packages when their list changed.
# The editor's front-end bundle ships built; it is rebuilt only when its sources changed.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=${PYTHON:-python3}
log() { printf '\033[1m[nodeflow]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_python() {
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "Python 3.11 or newer is needed (found: $("$PY" --version 2>&1 || echo none)); set PYTHON=..."
}

setup_python() {
    need_python
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment in $VENV"
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.nodeflow-installed" want
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing packages (torch is large: the first time takes a few minutes)"
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]" \
                > "$VENV/install.log" 2>&1; then
            grep -v '^WARNING: Location' "$VENV/install.log" | tail -n 30 >&2
            die "package installation failed (full log: $VENV/install.log)"
        fi
        echo "$want" > "$stamp"
    fi
}

setup_frontend() {
    if [ -x scripts/build_frontend.sh ]; then
        scripts/build_frontend.sh
    fi
}

setup_browser() {
    # The editor tests drive Debian's Chromium through Playwright (Playwright's own browser
    # download is not used).
    if command -v chromium >/dev/null 2>&1; then return; fi
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        log "installing Debian's chromium for the browser tests"
        $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
            || die "could not install chromium (apt-get install chromium)"
    else
        log "no chromium and no apt-get: browser tests will be skipped (set NODEFLOW_CHROMIUM to a Chromium binary)"
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup)
        setup_python; setup_frontend ;;
    editor|serve)
        setup_python; setup_frontend
        exec "$VENV/bin/nodeflow" serve "$@" ;;
    test)
        setup_python; setup_frontend; setup_browser
        # a worker per core (pytest-xdist); a test module stays on one worker, so its server and browser start once
        exec "$VENV/bin/python" -m pytest -n "${NODEFLOW_TEST_WORKERS:-auto}" --dist loadfile "$@" ;;
    *)
        sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
