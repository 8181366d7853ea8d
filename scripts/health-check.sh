#!/usr/bin/env bash
# The launch sequence's pre-flight (`./scripts/health-check.sh`), per server over SSH: disk, memory,
# Node and PM2 versions, the environment file (present, mode 600), database and Redis reachable,
# migrations pending, every worker's /ready, certificate expiry. One line per check, or --json.
#
#   scripts/health-check.sh --env NAME [--json]
# Exit code: the number of failed checks (0 = all good; 2 also means a usage error, with a message).
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/ensure-build.mjs
exec node dist/cli/deploy.js health "$@"
