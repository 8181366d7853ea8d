#!/usr/bin/env bash
# The server side of a Shipshape deploy. The deployer (scripts/deploy.sh, rollback.sh,
# health-check.sh → src/ops/delivery/) sends this file over SSH on every call and runs one command:
#
#   ssh deployer@host bash -s -- <app-dir> <command> [args…] < scripts/release-agent.sh
#
# so a server needs nothing installed but bash, coreutils, tar, curl, flock and Node: the agent is
# always the deployer's version. Layout under <app-dir> (the one deploy/server/bootstrap.sh makes):
#
#   releases/<UTC yyyymmddTHHMMSSZ>-<sha7>/   a complete release: dist/, deploy/, release.json, …
#   shared/.env (0600)   the service's environment (sourced here; values never printed)
#   shared/deps/<hash>/  production node_modules per lockfile hash; releases link to theirs
#   shared/logs/         PM2 logs          shared/pm2/   PM2_HOME (unless .env says otherwise)
#   current -> releases/<id>   switched atomically (rename(2) of a new symlink over the old)
#   releases.log         one line per install, switch, good mark and prune
#   good-releases        ids that passed a whole deploy (rollback's "previous" comes from here)
#   .deploy-lock/        owner, commit, start, heartbeat of the running deploy
#
# Every command exits 0 on success; 75 = the deploy lock is held by someone else (or was lost);
# anything else = failed, with the reason on stderr. Output for the deployer is "key<TAB>value".
set -euo pipefail
umask 027

die() {
  echo "release-agent: $*" >&2
  exit 1
}

(($# >= 2)) || die "usage: release-agent.sh <app-dir> <command> [args…]"
app=$1
cmd=$2
shift 2
[[ $app =~ ^/[A-Za-z0-9._/-]+$ ]] || die "app dir must be an absolute path of plain characters"
[ -d "$app" ] || die "$app does not exist (run deploy/server/bootstrap.sh first)"
cd "$app"
mkdir -p releases shared/deps shared/logs

valid_id() { [[ $1 =~ ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}$ ]] || die "not a release id: $1"; }
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log_line() { printf '%s %s\n' "$(now)" "$*" >>releases.log; }

# The service's environment, for the commands that run the release. Never echoed.
load_env() {
  [ -f shared/.env ] || die "shared/.env is missing"
  set -a
  # shellcheck disable=SC1091
  . shared/.env
  set +a
  export PM2_HOME="${PM2_HOME:-$app/shared/pm2}"
  export PM2_LOG_DIR="${PM2_LOG_DIR:-$app/shared/logs}"
  # PM2 runs the service from the symlink, so every reload starts the release `current` names now.
  export SHIPSHAPE_APP_DIR="$app/current"
  node_bin="${NODE_BIN:-$(command -v node || true)}"
  [ -x "$node_bin" ] || die "no node (set NODE_BIN in shared/.env)"
  PATH="$(dirname "$node_bin"):$PATH"
}

current_id() {
  local target
  target=$(readlink current 2>/dev/null || true)
  printf '%s' "${target##*/}"
}

# The same hash the builder computes (src/ops/delivery/artifact.ts): every file but node_modules and
# release.json, sorted by path, hashed as `sha256sum` lines.
content_hash() {
  (cd "$1" && find . -path ./node_modules -prune -o -type f ! -path ./release.json -print0 |
    LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1)
}

manifest_field() {
  sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$1/release.json"
}

# --- Lock -----------------------------------------------------------------------------------------
# mkdir is the lock; flock on a guard file serialises acquire, reclaim and release on this host.
lock_guard() {
  exec 9>>.deploy-lock.guard
  flock -w 30 9 || die "cannot take the lock guard"
}

cmd_lock() {
  local action=${1:-} token=${2:-}
  [[ $token =~ ^[A-Za-z0-9]{16,64}$ ]] || die "lock: bad token"
  lock_guard
  case "$action" in
    acquire)
      local stale=${3:-} owner=${4:-} commit=${5:-}
      [[ $stale =~ ^[0-9]+$ ]] || die "lock acquire: staleness must be seconds"
      if [ -d .deploy-lock ]; then
        local beat age
        beat=$(stat -c %Y .deploy-lock/heartbeat 2>/dev/null || stat -c %Y .deploy-lock)
        age=$(($(date +%s) - beat))
        if ((age <= stale)); then
          printf 'held\t%s\theartbeat %ss ago\n' "$(tr '\n' ' ' <.deploy-lock/info 2>/dev/null)" "$age"
          exit 75
        fi
        printf 'reclaimed\t%s\theartbeat %ss ago (stale after %ss)\n' \
          "$(tr '\n' ' ' <.deploy-lock/info 2>/dev/null)" "$age" "$stale"
        log_line "lock reclaimed from $(tr '\n' ' ' <.deploy-lock/info 2>/dev/null) (heartbeat ${age}s old)"
        rm -rf .deploy-lock
      fi
      mkdir .deploy-lock
      printf 'owner=%s\ncommit=%s\nstarted=%s\n' "$owner" "$commit" "$(now)" >.deploy-lock/info
      printf '%s\n' "$token" >.deploy-lock/token
      touch .deploy-lock/heartbeat
      printf 'acquired\n'
      ;;
    heartbeat | release)
      if [ ! -d .deploy-lock ] || [ "$(cat .deploy-lock/token 2>/dev/null)" != "$token" ]; then
        printf 'lost\n'
        exit 75
      fi
      if [ "$action" = heartbeat ]; then touch .deploy-lock/heartbeat; else rm -rf .deploy-lock; fi
      printf '%s\n' "$action"
      ;;
    *) die "lock: acquire, heartbeat or release" ;;
  esac
}

# --- What is here --------------------------------------------------------------------------------
cmd_status() {
  printf 'current\t%s\n' "$(current_id)"
  local dir id
  for dir in releases/*/; do
    [ -f "$dir/release.json" ] || continue
    id=$(basename "$dir")
    printf 'release\t%s\t%s\n' "$id" "$(tr -d '\n' <"$dir/release.json")"
  done
  [ -f good-releases ] && while read -r id; do printf 'good\t%s\n' "$id"; done <good-releases
  for dir in shared/deps/*/; do
    [ -d "$dir/node_modules" ] && printf 'deps\t%s\n' "$(basename "$dir")"
  done
  if [ -d .deploy-lock ]; then printf 'lock\t%s\n' "$(tr '\n' ' ' <.deploy-lock/info 2>/dev/null)"; fi
  printf 'node\t%s\n' "$( (load_env >/dev/null 2>&1 && "$node_bin" -p 'process.version + " abi " + process.versions.modules') || echo none)"
}

# --- Receive and install -------------------------------------------------------------------------
cmd_receive_deps() {
  local hash=${1:-}
  [[ $hash =~ ^[0-9a-f]{64}$ ]] || die "receive-deps: bad hash"
  if [ -d "shared/deps/$hash/node_modules" ]; then
    cat >/dev/null
    printf 'deps\tpresent\n'
    return
  fi
  local tmp
  tmp=$(mktemp -d "shared/deps/.incoming.XXXXXX")
  tar -x -C "$tmp" -f - || { rm -rf "$tmp"; die "receive-deps: the archive did not unpack"; }
  [ -d "$tmp/node_modules" ] || { rm -rf "$tmp"; die "receive-deps: no node_modules in the archive"; }
  rm -rf "shared/deps/$hash"
  mv -T "$tmp" "shared/deps/$hash"
  printf 'deps\treceived\n'
}

cmd_receive() {
  local id=${1:-}
  valid_id "$id"
  [ ! -e "releases/$id" ] || die "release $id is already here"
  rm -rf "releases/.incoming-$id"
  mkdir "releases/.incoming-$id"
  tar -x -C "releases/.incoming-$id" -f - || die "receive: the archive did not unpack"
  printf 'received\t%s\n' "$id"
}

# Checks a received release and moves it into place; nothing that serves is touched. Any failure
# leaves releases/.incoming-<id> for inspection and no releases/<id>.
cmd_install() {
  local id=${1:-}
  valid_id "$id"
  local tmp="releases/.incoming-$id"
  [ -f "$tmp/release.json" ] || die "install: $id was not received (no release.json)"
  local want got deps abi
  want=$(manifest_field "$tmp" contentHash)
  got=$(content_hash "$tmp")
  [ "$want" = "$got" ] || die "install: content hash mismatch for $id (manifest $want, files $got): the artifact is corrupt"
  deps=$(manifest_field "$tmp" depsHash)
  [ -d "shared/deps/$deps/node_modules" ] || die "install: dependencies $deps are not on this server"
  load_env
  abi=$("$node_bin" -p process.versions.modules)
  [ "$abi" = "$(manifest_field "$tmp" nodeAbi)" ] ||
    die "install: $id was built for Node ABI $(manifest_field "$tmp" nodeAbi), this server runs $abi ($("$node_bin" -v))"
  ln -sfn "../../shared/deps/$deps/node_modules" "$tmp/node_modules"
  # Load every module the service needs (native bindings included) without starting it.
  (cd "$tmp" && "$node_bin" --input-type=module -e "await import('./dist/app.js'); await import('./dist/config.js');") ||
    die "install: $id does not load on this server (see the error above)"
  mv -T "$tmp" "releases/$id"
  log_line "install $id"
  printf 'installed\t%s\n' "$id"
}

# --- Migrate, smoke, switch, reload, probe -------------------------------------------------------
# `npm run db:migrate:production` from the new release (advisory lock, lock_timeout with retries,
# contract migrations only when every retained release knows them: the deployer names those).
cmd_migrate() {
  local id=${1:-} allowed=${2:-}
  valid_id "$id"
  [[ $allowed =~ ^[A-Za-z0-9_,-]*$ ]] || die "migrate: bad contract list"
  [ -d "releases/$id" ] || die "migrate: no release $id"
  load_env
  (cd "releases/$id" && "$node_bin" dist/cli/migrate-production.js --allow-contract "$allowed") ||
    die "migrate: migrations of $id failed"
  log_line "migrate $id"
}

# The database's applied migrations and which of them are contract ones (rollback checks them).
cmd_db_status() {
  load_env
  [ -L current ] || die "db-status: nothing is current"
  (cd current && "$node_bin" dist/cli/migrate-production.js --status 2>/dev/null) || die "db-status: cannot read the schema"
}

# Boots the release once as a plain process on a free port and waits for /ready: a release that
# cannot become ready fails here, before PM2 (which would replace a healthy worker after
# listen_timeout, ready or not) is involved.
cmd_smoke() {
  local id=${1:-} timeout=${2:-60}
  valid_id "$id"
  [[ $timeout =~ ^[0-9]+$ ]] || die "smoke: timeout in seconds"
  [ -d "releases/$id" ] || die "smoke: no release $id"
  load_env
  local out pid port=""
  out=$(mktemp)
  (cd "releases/$id" && PORT=0 HOST=127.0.0.1 LOG_LEVEL=info exec env -u METRICS_PORT -u NODE_APP_INSTANCE \
    "$node_bin" dist/main.js) >"$out" 2>&1 &
  pid=$!
  local deadline=$((SECONDS + timeout)) status=""
  while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
    port=$(grep '"msg":"ready"' "$out" | grep -o '"port":[0-9]*' | head -n 1 | cut -d: -f2 || true)
    if [ -n "$port" ]; then
      status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/ready" || true)
      [ "$status" = 200 ] && break
    fi
    sleep 0.5
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$status" != 200 ]; then
    echo "smoke: $id did not become ready within ${timeout}s (port ${port:-none}, /ready ${status:-no answer}); its last lines:" >&2
    tail -n 15 "$out" | cut -c1-400 >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
  printf 'smoke\tready\n'
}

cmd_switch() {
  local id=${1:-} why=${2:-deploy}
  valid_id "$id"
  [ -d "releases/$id" ] || die "switch: no release $id here"
  local before tmp
  before=$(current_id)
  tmp=".current.$$"
  ln -sfn "releases/$id" "$tmp"
  mv -T "$tmp" current
  log_line "switch ${before:-none} -> $id ($why)"
  printf 'switched\t%s\t%s\n' "${before:-none}" "$id"
}


# `npm run pm2:start|reload` from the release now current: it checks the environment, reloads one
# worker at a time and succeeds only when every worker answers /ready (src/cli/pm2.ts).
cmd_reload() {
  load_env
  [ -L current ] || die "reload: nothing is current"
  mkdir -p "$PM2_HOME"
  local out
  out=$(mktemp)
  # Reload; on the first deploy PM2 has nothing to reload yet: start (asking PM2's list costs more).
  if (cd current && "$node_bin" dist/cli/pm2.js reload) 2>"$out"; then
    rm -f "$out"
    return
  fi
  if grep -q 'is not running; start it' "$out"; then
    rm -f "$out"
    (cd current && "$node_bin" dist/cli/pm2.js start) || die "reload: pm2 start failed"
    return
  fi
  cat "$out" >&2
  rm -f "$out"
  die "reload: pm2 reload failed"
}

# How many API workers PM2 runs: worker i answers /ready and /metrics on METRICS_PORT + i. PM2's own
# list when its daemon is up and runs the app (an autoscaler may have scaled it past the file's
# count); otherwise PM2_INSTANCES resolved as PM2 resolves the ecosystem file's `instances` (God.js:
# 'max' or 0 → os.cpus().length of the same Node, -k → that minus k, at least 1; N → N). Unset is
# 'max', deploy/pm2/ecosystem.config.cjs's default. Anything else stops with the reason (an
# unchecked value would fail the loop arithmetic under set -u, or probe a wrong number of ports).
# Needs load_env first.
worker_count() {
  local spec=${PM2_INSTANCES:-max} n cpus listed
  if [ "$spec" = max ]; then
    n=0
  elif [[ $spec =~ ^-?[0-9]{1,4}$ ]]; then
    n=$((10#${spec#-}))
    [ "${spec:0:1}" = - ] && n=$((-n))
  else
    die "PM2_INSTANCES=$spec in shared/.env: expected a number of workers, max (one per CPU, the default) or -N (one per CPU but N)"
  fi
  listed=$(pm2_listed_workers || true)
  if [ -n "$listed" ]; then
    printf '%s' "$listed"
    return
  fi
  if ((n <= 0)); then
    cpus=$("$node_bin" -p 'require("node:os").cpus().length')
    n=$((cpus + n))
    ((n >= 1)) || n=1
  fi
  printf '%s' "$n"
}

# The app's highest NODE_APP_INSTANCE + 1 in `pm2 jlist`, or nothing. Only when the daemon runs
# (a live pid and its socket): `pm2 jlist` starts a daemon when there is none, which a probe must
# not do. Bounded: a hung daemon must not hang the probe.
pm2_listed_workers() {
  local pid
  [ -f current/node_modules/pm2/bin/pm2 ] && [ -S "$PM2_HOME/rpc.sock" ] || return 0
  pid=$(cat "$PM2_HOME/pm2.pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 0
  timeout 15 "$node_bin" current/node_modules/pm2/bin/pm2 jlist 2>/dev/null |
    PM2_APP="${PM2_APP_NAME:-shipshape}" "$node_bin" -e '
      let text = "";
      process.stdin.setEncoding("utf8").on("data", (c) => (text += c)).on("end", () => {
        // PM2 may print notices before the JSON line.
        const line = text.split("\n").reverse().find((l) => l.startsWith("["));
        let list = [];
        try { list = JSON.parse(line ?? "[]"); } catch {}
        const mine = list.filter((p) => p.name === process.env.PM2_APP);
        if (mine.length > 0)
          process.stdout.write(String(Math.max(...mine.map((p) => Number(p.pm2_env?.NODE_APP_INSTANCE ?? 0))) + 1));
      });' || true
}

cmd_ready() {
  load_env
  local n base=${METRICS_PORT:?METRICS_PORT must be set in shared/.env} host=${HOST:-127.0.0.1}
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  n=$(worker_count)
  local i code failed=0
  for ((i = 0; i < n; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$host:$((base + i))/ready" || true)
    printf 'worker\t%s\t%s\n' "$i" "$code"
    [ "$code" = 200 ] || failed=$((failed + 1))
  done
  return "$failed"
}

# Every worker's request counters, latency buckets and start time (a changed or missing start time
# is a restart): the deployer compares them (src/ops/delivery/watch.ts).
cmd_metrics() {
  load_env
  local n base=${METRICS_PORT:?} host=${HOST:-127.0.0.1} i
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  n=$(worker_count)
  # The token as the service reads it (METRICS_TOKEN, or the file METRICS_TOKEN_FILE names), given
  # to curl as a header file: on its command line it would be in every user's `ps`.
  local token=${METRICS_TOKEN:-}
  if [ -z "$token" ] && [ -n "${METRICS_TOKEN_FILE:-}" ]; then
    token=$(cat "$METRICS_TOKEN_FILE") || die "metrics: cannot read METRICS_TOKEN_FILE $METRICS_TOKEN_FILE"
  fi
  for ((i = 0; i < n; i++)); do
    printf '### worker %s\n' "$i"
    curl -s --max-time 5 -H @<(if [ -n "$token" ]; then printf 'authorization: Bearer %s\n' "$token"; fi) \
      "http://$host:$((base + i))/metrics" |
      grep -E '^(http_request(s_total|_duration_seconds_bucket)\{|process_start_time_seconds )' || true
  done
}

cmd_mark_good() {
  local id=${1:-}
  valid_id "$id"
  [ -d "releases/$id" ] || die "mark-good: no release $id"
  grep -qx "$id" good-releases 2>/dev/null || printf '%s\n' "$id" >>good-releases
  log_line "good $id"
}

# Keeps the newest <keep> releases by name (never by mtime), and always current and the newest good
# one; removes dependency sets no remaining release uses.
cmd_prune() {
  local keep=${1:-5}
  [[ $keep =~ ^[0-9]+$ && $keep -ge 1 ]] || die "prune: keep at least one release"
  local cur lastgood
  cur=$(current_id)
  lastgood=$(tail -n 1 good-releases 2>/dev/null || true)
  local -a all=()
  mapfile -t all < <(find releases -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' -printf '%f\n' | LC_ALL=C sort -r)
  local i=0 id
  for id in "${all[@]}"; do
    i=$((i + 1))
    ((i <= keep)) && continue
    [ "$id" = "$cur" ] || [ "$id" = "$lastgood" ] && continue
    rm -rf "releases/$id"
    log_line "prune $id"
    printf 'pruned\t%s\n' "$id"
  done
  local dir used
  for dir in shared/deps/*/; do
    [ -d "$dir" ] || continue
    used=false
    for id in releases/*/; do
      [ "$(readlink "$id/node_modules" 2>/dev/null)" = "../../shared/deps/$(basename "$dir")/node_modules" ] && used=true
    done
    $used || { rm -rf "$dir"; printf 'pruned-deps\t%s\n' "$(basename "$dir")"; }
  done
  rm -rf releases/.incoming-*
}

cmd_health() {
  local avail total
  avail=$(df -Pk "$app" | awk 'NR==2 {print $4}')
  total=$(df -Pk "$app" | awk 'NR==2 {print $2}')
  printf 'disk\t%s\t%s\n' "$avail" "$total"
  printf 'memory\t%s\t%s\n' "$(awk '/MemAvailable/ {print $2}' /proc/meminfo)" "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  if [ -f shared/.env ]; then printf 'envfile\t%s\n' "$(stat -c %a shared/.env)"; else printf 'envfile\tmissing\n'; fi
  load_env
  printf 'node\t%s\n' "$("$node_bin" -v)"
  printf 'current\t%s\n' "$(current_id)"
  if [ -f current/node_modules/pm2/package.json ]; then
    printf 'pm2\t%s\n' "$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' current/node_modules/pm2/package.json | head -n 1)"
  else
    printf 'pm2\tnone\n'
  fi
  local n base=${METRICS_PORT:-0} host=${HOST:-127.0.0.1} i
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  n=$(worker_count)
  for ((i = 0; i < n && base > 0; i++)); do
    printf 'ready\t%s\t%s\n' "$i" "$(curl -s --max-time 5 "http://$host:$((base + i))/ready" | tr -d '\n\t' || true)"
  done
  if [ -n "${TLS_CERT_FILE:-}" ] && [ -r "$TLS_CERT_FILE" ]; then
    printf 'certificate\t%s\n' "$(openssl x509 -noout -enddate -in "$TLS_CERT_FILE" | cut -d= -f2)"
  fi
  true
}

case "$cmd" in
  lock) cmd_lock "$@" ;;
  status) cmd_status ;;
  receive-deps) cmd_receive_deps "$@" ;;
  receive) cmd_receive "$@" ;;
  install) cmd_install "$@" ;;
  migrate) cmd_migrate "$@" ;;
  db-status) cmd_db_status ;;
  smoke) cmd_smoke "$@" ;;
  switch) cmd_switch "$@" ;;
  reload) cmd_reload ;;
  ready) cmd_ready ;;
  metrics) cmd_metrics ;;
  mark-good) cmd_mark_good "$@" ;;
  prune) cmd_prune "$@" ;;
  health) cmd_health ;;
  *) die "unknown command: $cmd" ;;
esac
