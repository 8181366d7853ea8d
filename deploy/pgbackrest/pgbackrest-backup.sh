#!/bin/sh
# One scheduled pgBackRest backup of the shipshape stanza, then its success time for
# node-exporter's textfile collector (the BackupTooOld alert reads
# backup_last_success_timestamp_seconds). Run by systemd/pgbackrest-backup@.service as postgres:
#   /usr/local/lib/shipshape/pgbackrest-backup.sh full|diff|incr
# The textfile is written only on success, atomically (a temp file renamed into place), so an old
# timestamp means every run since has failed. pgBackRest reads its configuration from
# /etc/pgbackrest/ (or PGBACKREST_CONFIG / PGBACKREST_CONFIG_INCLUDE_PATH).
# A backup goes to one repository (repo1 unless --repo): with an off-host repo2 configured, set
# SHIPSHAPE_PGBACKREST_REPOS="1 2" in the service's environment (a drop-in) to back up to each in
# turn; the success time is recorded only when every one succeeded.
set -eu

type=${1:-}
case $type in
  full | diff | incr) ;;
  *)
    echo "usage: $0 full|diff|incr" >&2
    exit 2
    ;;
esac
stanza=${SHIPSHAPE_PGBACKREST_STANZA:-shipshape}
textfile_dir=${SHIPSHAPE_TEXTFILE_DIR:-/var/lib/prometheus/node-exporter}

repos=${SHIPSHAPE_PGBACKREST_REPOS:-}

if [ -z "$repos" ]; then
  pgbackrest --stanza="$stanza" --type="$type" backup
else
  for repo in $repos; do
    pgbackrest --stanza="$stanza" --repo="$repo" --type="$type" backup
  done
fi

if [ -d "$textfile_dir" ]; then
  prom="$textfile_dir/pgbackrest-$type.prom"
  tmp="$prom.$$.tmp"
  {
    echo "# HELP backup_last_success_timestamp_seconds When the last backup of this kind succeeded."
    echo "# TYPE backup_last_success_timestamp_seconds gauge"
    echo "backup_last_success_timestamp_seconds{tool=\"pgbackrest\",stanza=\"$stanza\",type=\"$type\"} $(date +%s)"
  } >"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$prom"
else
  echo "$0: $textfile_dir does not exist: backup done, success time not recorded" >&2
fi
