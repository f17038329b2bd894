#!/usr/bin/env bash
# Takes a base backup for point-in-time recovery: pg_basebackup (plain format,
# WAL streamed in, fast checkpoint, SHA-256 backup manifest), then
# pg_verifybackup on the result. Together with the WAL archive (archive-wal.sh)
# it lets recover.sh rebuild the cluster as of any moment after this backup.
#
#   ops/pitr/base-backup.sh --db-url 'postgres://replicator@db-primary:5432/postgres' --out /srv/pg-base/$(date -u +%Y%m%dT%H%M%SZ)
#
# The role needs REPLICATION and pg_hba.conf must allow it a `replication`
# connection. Put a password in ~/.pgpass or PGPASSWORD, not in the URL (the
# URL is visible in `ps`).
#
# Options:
#   --db-url URL     connection to the cluster to back up (replication-capable role)
#   --out DIR        new directory for the backup (must not exist or be empty)
#   --bin-dir DIR    PostgreSQL binaries (default: PG_BIN_DIR, else
#                    /usr/lib/postgresql/<server major>/bin)
set -euo pipefail

die() { echo "base-backup: $*" >&2; exit 1; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

db_url=""
out=""
bin_dir="${PG_BIN_DIR:-}"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --db-url) db_url=${2:?--db-url needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a value}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "base-backup: unknown option $1" >&2; usage ;;
  esac
done
[ -n "$db_url" ] || die "--db-url is required"
[ -n "$out" ] || die "--out is required"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  die "$out exists and is not empty"
fi

if [ -z "$bin_dir" ]; then
  psql_bin=$(command -v psql || true)
  [ -n "$psql_bin" ] || die "no psql on PATH to ask the server its version; pass --bin-dir"
  major=$("$psql_bin" "$db_url" -XAtc "SELECT current_setting('server_version_num')::int / 10000") \
    || die "cannot connect to the server to read its version"
  bin_dir="/usr/lib/postgresql/$major/bin"
fi
for tool in pg_basebackup pg_verifybackup; do
  [ -x "$bin_dir/$tool" ] || die "$bin_dir/$tool not found: install postgresql-client-<major> matching the server, or pass --bin-dir"
done

label="shieldx base backup $(date -u +%Y-%m-%dT%H:%M:%SZ)"
"$bin_dir/pg_basebackup" --dbname="$db_url" --pgdata="$out" --format=plain --wal-method=stream \
  --checkpoint=fast --manifest-checksums=SHA256 --label="$label" --no-password
"$bin_dir/pg_verifybackup" "$out" >/dev/null
echo "base backup written to $out ($label), verified by pg_verifybackup"
