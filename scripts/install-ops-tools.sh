#!/usr/bin/env bash
# Installs the Debian packages that the test suites and `npm run stack` use (Debian 12 / Ubuntu
# 22.04+), and only those that are missing. Run as root, or with sudo:
#
#   sudo scripts/install-ops-tools.sh            # install what is missing
#   scripts/install-ops-tools.sh --check         # list what is missing; exit 1 if anything is
#
# Installing a package whose Debian scripts would start a daemon (nginx, prometheus, pgbouncer,
# sshd, ...) is done with a policy-rc.d that forbids it: the suites start their own instances on
# loopback, on free ports, in temporary directories, and nothing is left running system-wide.
set -euo pipefail

# command-to-look-for:package. One line per tool; keep it sorted by package.
tools=(
  age:age
  bats:bats
  buildah:buildah
  catatonit:catatonit
  certbot:certbot
  chromium:chromium
  chromedriver:chromium-driver
  curl:curl
  debootstrap:debootstrap
  fail2ban-client:fail2ban
  jq:jq
  nginx:nginx
  sshd:openssh-server
  ssh:openssh-client
  pebble:pebble
  pgbackrest:pgbackrest
  pgbouncer:pgbouncer
  podman:podman
  pg_ctlcluster:postgresql
  prometheus:prometheus
  prometheus-alertmanager:prometheus-alertmanager
  prometheus-blackbox-exporter:prometheus-blackbox-exporter
  prometheus-nginx-exporter:prometheus-nginx-exporter
  prometheus-node-exporter:prometheus-node-exporter
  prometheus-postgres-exporter:prometheus-postgres-exporter
  prometheus-redis-exporter:prometheus-redis-exporter
  /usr/lib/python3/dist-packages/certbot_nginx:python3-certbot-nginx
  redis-server:redis-server
  runc:runc
  shellcheck:shellcheck
  systemd-analyze:systemd
  testssl:testssl.sh
  ufw:ufw
  taskset:util-linux
  wrk:wrk
  xmllint:libxml2-utils
)

have() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
  esac
}

missing=()
for entry in "${tools[@]}"; do
  have "${entry%%:*}" || missing+=("${entry#*:}")
done

if [ "${1:-}" = "--check" ]; then
  if ((${#missing[@]} == 0)); then
    echo "all ops tools are installed"
    exit 0
  fi
  echo "missing Debian packages: ${missing[*]}"
  echo "install them with: sudo scripts/install-ops-tools.sh"
  exit 1
fi

if ((${#missing[@]} == 0)); then
  echo "all ops tools are installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run this script as root (sudo $0)" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
policy=/usr/sbin/policy-rc.d
created_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=true
fi
trap '[ "$created_policy" = true ] && rm -f "$policy"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
