#!/usr/bin/env bash
# The guide's `./scripts/deploy.sh --production`, for real: build the release artifact once (or ship
# the one CI built, --artifact DIR), ship it over SSH with pinned host keys, install it beside the
# running release, migrate, boot it once on the side, then per server (canary first, with a watch
# window) switch `current`, reload PM2 and gate on every worker's /ready; any failure rolls back
# every server already switched. Logic: src/ops/delivery/deploy.ts; server side:
# scripts/release-agent.sh. `scripts/deploy.sh --help` lists the options.
#
# Exit codes: 0 ok, 1 failed and rolled back (or stopped before any switch: a build that fails, a
# release that cannot install), 2 usage/refused, 3 deploy lock held, 4 rollback failed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build comes first, on this machine: one that fails stops here, before any server is contacted.
if ! node scripts/ensure-build.mjs; then
  echo "deploy: the build failed (above): nothing was shipped, no server was contacted" >&2
  exit 1
fi
exec node dist/cli/deploy.js deploy "$@"
