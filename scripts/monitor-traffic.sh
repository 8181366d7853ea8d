#!/usr/bin/env bash
# Live traffic (the guide's launch step "./scripts/monitor-traffic.sh"), in two forms:
#
#   scripts/monitor-traffic.sh --env NAME | --production [--seconds S] [--interval S]
#                              [--max-5xx-ratio R] [--max-p95-ms N] [--config FILE]
#     The servers of a deploy environment (the same file and format as scripts/deploy.sh), watched
#     over SSH for a bounded window (default 60 s, a sample every 5 s): every worker's /ready and
#     /metrics, then one table — requests/s, 5xx ratio, p95 per server and in all. Exit 1 when an
#     SLO is breached (5xx ratio or p95 above the environment's sloMaxErrorRatio / sloMaxP95Ms, a
#     worker not ready, a worker restarted, a server not answering), 2 usage. Logic:
#     src/ops/delivery/monitor.ts.
#
#   scripts/monitor-traffic.sh [--prometheus URL] [--job NAME] [--interval SECONDS] [--once]
#     The whole service from Prometheus: requests/s, 5xx ratio and p95 over the last minute, and
#     which workers are up; one line per interval (--once: one line). PROMETHEUS_URL sets the default
#     server (http://127.0.0.1:9090). Exit codes: 0 ok, 1 Prometheus unreachable or erroring, 2 usage.
#     Needs curl and jq (scripts/install-ops-tools.sh).
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    --env | --env=* | --production | --config | --config=*)
      cd "$(dirname "$0")/.."
      node scripts/ensure-build.mjs
      exec node dist/cli/deploy.js monitor "$@"
      ;;
  esac
done

usage() {
  echo "usage: $0 --env NAME [--seconds S] [--interval S] [--max-5xx-ratio R] [--max-p95-ms N]" >&2
  echo "       $0 [--prometheus URL] [--job NAME] [--interval SECONDS] [--once]" >&2
  exit 2
}

prometheus="${PROMETHEUS_URL:-http://127.0.0.1:9090}"
job=shipshape
interval=5
once=false
while (($# > 0)); do
  case "$1" in
    --prometheus) (($# >= 2)) || usage; prometheus="$2"; shift 2 ;;
    --job) (($# >= 2)) || usage; job="$2"; shift 2 ;;
    --interval) (($# >= 2)) || usage; interval="$2"; shift 2 ;;
    --once) once=true; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ "$interval" =~ ^[0-9]+$ && "$interval" -ge 1 ]] || { echo "--interval must be a whole number of seconds" >&2; usage; }
[[ "$job" =~ ^[A-Za-z0-9_:-]+$ ]] || { echo "--job must be a Prometheus job name" >&2; usage; }

user="job=\"$job\", route!~\"/health|/ready|/metrics\""
q_rps="sum(rate(http_requests_total{$user}[1m]))"
q_errors="(sum(rate(http_requests_total{$user, status_code=~\"5..\"}[1m])) or vector(0)) / (sum(rate(http_requests_total{$user}[1m])) > 0) or vector(0)"
q_p95="histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{$user}[1m])))"
q_up="up{job=\"$job\"}"

# Prints the JSON result of an instant query; exits 1 with Prometheus's message on failure.
query() {
  local body
  if ! body=$(curl -fsS --max-time 10 --data-urlencode "query=$1" "$prometheus/api/v1/query" 2>&1); then
    echo "cannot query Prometheus at $prometheus: $body" >&2
    exit 1
  fi
  if [ "$(jq -r .status <<<"$body")" != success ]; then
    echo "Prometheus refused the query: $(jq -r .error <<<"$body")" >&2
    exit 1
  fi
  printf '%s' "$body"
}

# The first sample's value, or "-" when there is none (no traffic, no such job).
value() { jq -r '.data.result[0].value[1] // "-"'; }

line() {
  local rps errors p95 up
  rps=$(query "$q_rps" | value)
  errors=$(query "$q_errors" | value)
  p95=$(query "$q_p95" | value)
  up=$(query "$q_up")
  local total healthy down
  total=$(jq '.data.result | length' <<<"$up")
  healthy=$(jq '[.data.result[] | select(.value[1] == "1")] | length' <<<"$up")
  down=$(jq -r '[.data.result[] | select(.value[1] != "1") | .metric.instance] | join(" ")' <<<"$up")
  LC_ALL=C awk -v t="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -v rps="$rps" -v err="$errors" -v p95="$p95" \
    -v up="$healthy" -v total="$total" -v down="$down" 'BEGIN {
      printf "%s  req/s %s  5xx %s  p95 %s  workers up %d/%d%s\n", t,
        (rps == "-" ? "-" : sprintf("%.1f", rps)),
        (err == "-" || err == "NaN" ? "-" : sprintf("%.2f%%", err * 100)),
        (p95 == "-" || p95 == "NaN" ? "-" : sprintf("%.0f ms", p95 * 1000)),
        up, total, (down == "" ? "" : "  down: " down)
    }'
}

if [ "$once" = true ]; then
  line
  exit 0
fi
echo "Shipshape traffic from $prometheus (job $job), every ${interval}s; Ctrl-C to stop"
while true; do
  line
  sleep "$interval"
done
