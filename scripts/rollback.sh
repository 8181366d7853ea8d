#!/usr/bin/env bash
# The guide's `./scripts/rollback.sh --to=v1.2.3`: switch every server back to a release that is
# still installed there (a release id, a version tag, a commit prefix, or `previous`: the newest good
# release before the current one), reloading PM2 and gating on /ready — nothing is installed.
# `--list` shows what each server has. The deploy lock is taken first, then every server's state is
# read: an unknown target, or one that means different releases on different servers (`previous`
# after a partial deploy), changes nothing and exits 2 (--force switches each server to its own).
#
#   scripts/rollback.sh --env NAME --to=previous | --to=v1.2.3 | --list
# Exit codes: 0 ok, 2 unknown or ambiguous target, or usage, 3 deploy lock held, 4 the switch back
# failed, 5 refused: a server's target predates a contract migration the database has applied
# (--force overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/ensure-build.mjs
exec node dist/cli/deploy.js rollback "$@"
