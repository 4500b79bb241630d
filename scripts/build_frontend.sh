#!/usr/bin/env bash
# Build the editor's Vue Flow bundle (nodeflow/ui/dist/index.js) from the pinned lock file.
# Idempotent: skips when the bundle was built from the same lock file and sources.
# Usage: scripts/build_frontend.sh [--force]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
frontend="$root/nodeflow/ui/frontend"
dist="$root/nodeflow/ui/dist"
stamp_file="$dist/.build-stamp"

command -v npm >/dev/null || { echo "build_frontend: npm not found; install Node.js 18+ first" >&2; exit 1; }

stamp="$(cat "$frontend/package.json" "$frontend/package-lock.json" "$frontend"/src/* | sha256sum | cut -d' ' -f1)"
if [[ "${1:-}" != "--force" && -f "$dist/index.js" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
  echo "build_frontend: bundle up to date ($dist/index.js)"
  exit 0
fi

cd "$frontend"
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p "$dist"
npm run --silent build
echo "$stamp" > "$stamp_file"
echo "build_frontend: built $dist/index.js ($(wc -c < "$dist/index.js") bytes)"
