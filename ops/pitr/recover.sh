#!/usr/bin/env bash
# Point-in-time recovery: rebuilds a PostgreSQL cluster as it was at a chosen
# moment, from a base backup (base-backup.sh) plus the WAL archive
# (archive-wal.sh), into a NEW data directory. The base backup and the archive
# are only read, never changed, so a wrong target time costs nothing: run again.
#
#   sudo ops/pitr/recover.sh --base-backup /srv/pg-base/20261124T020000Z \
#        --wal-archive /srv/pg-wal-archive --target-time '2026-11-24 14:31:07.250+00' \
#        --data-dir /srv/pg-recovered --port 5440
#
# What it does: checks the base backup (pg_verifybackup), copies it into
# --data-dir, writes restore_command / recovery_target_time /
# recovery_target_action=promote into postgresql.auto.conf, creates
# recovery.signal, starts the server (as the postgres OS user when run as
# root), waits until recovery has stopped at the target and the server is
# promoted, and prints where recovery stopped. The recovered cluster has
# archive_mode off (it must not write into the original's archive) and
# listens on --listen (default 127.0.0.1) and --port only.
#
# Options:
#   --base-backup DIR   plain-format base backup taken BEFORE the target time
#   --wal-archive DIR   the WAL archive written by archive_command
#   --target-time TS    e.g. '2026-11-24 14:31:07.250+00' (give the UTC offset);
#                       the last transaction committed at or before it is kept
#   --data-dir DIR      new data directory (must not exist, or be empty)
#   --port N            port for the recovered server (default 5433)
#   --listen ADDRS      listen_addresses (default 127.0.0.1)
#   --socket-dir DIR    unix_socket_directories (default /tmp)
#   --bin-dir DIR       PostgreSQL server binaries (default PG_BIN_DIR, else
#                       /usr/lib/postgresql/<PG_VERSION of the backup>/bin)
#   --os-user NAME      OS user that runs the server when run as root (default postgres)
#   --timeout SECONDS   how long to wait for recovery to finish (default 600)
#   --no-start          prepare the data directory only; start it yourself
set -euo pipefail

die() { echo "recover: $*" >&2; exit 1; }
usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

base=""
archive=""
target=""
data=""
port=5433
listen=127.0.0.1
socket_dir=/tmp
bin_dir="${PG_BIN_DIR:-}"
os_user=postgres
timeout=600
start=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --base-backup) base=${2:?--base-backup needs a value}; shift 2 ;;
    --wal-archive) archive=${2:?--wal-archive needs a value}; shift 2 ;;
    --target-time) target=${2:?--target-time needs a value}; shift 2 ;;
    --data-dir) data=${2:?--data-dir needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --listen) listen=${2:?--listen needs a value}; shift 2 ;;
    --socket-dir) socket_dir=${2:?--socket-dir needs a value}; shift 2 ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a value}; shift 2 ;;
    --os-user) os_user=${2:?--os-user needs a value}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "recover: unknown option $1" >&2; usage ;;
  esac
done

[ -n "$base" ] || die "--base-backup is required"
[ -n "$archive" ] || die "--wal-archive is required"
[ -n "$target" ] || die "--target-time is required"
[ -n "$data" ] || die "--data-dir is required"
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[ -f "$base/PG_VERSION" ] || die "$base is not a plain-format base backup (no PG_VERSION)"
[ -f "$base/backup_label" ] || die "$base has no backup_label: not a base backup (a copied data directory cannot be used)"
[ -d "$archive" ] || die "WAL archive $archive is not a directory"
for path in "$archive" "$data"; do
  case "$path" in *\'*|*\"*) die "paths must not contain quotes: $path" ;; esac
done
case "$target" in *\'*) die "--target-time must not contain quotes" ;; esac
date -d "$target" >/dev/null 2>&1 || die "--target-time '$target' is not a timestamp (e.g. '2026-11-24 14:31:07.250+00')"
if ! [[ "$target" =~ ([+-][0-9]{2}(:?[0-9]{2})?|Z|UTC)$ ]]; then
  echo "recover: warning: --target-time has no UTC offset; it is read in the recovered server's timezone setting" >&2
fi
if [ -e "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
  die "$data exists and is not empty: recover into a new directory"
fi
archive=$(cd "$archive" && pwd)

major=$(cat "$base/PG_VERSION")
[ -n "$bin_dir" ] || bin_dir="/usr/lib/postgresql/$major/bin"
for tool in postgres pg_ctl psql pg_verifybackup; do
  [ -x "$bin_dir/$tool" ] || die "$bin_dir/$tool not found: install postgresql-$major, or pass --bin-dir"
done
bin_major=$("$bin_dir/postgres" --version | sed -E 's/.*\(PostgreSQL\) ([0-9]+).*/\1/')
[ "$bin_major" = "$major" ] || die "base backup is PostgreSQL $major but $bin_dir holds $bin_major"

as_user=()
if [ "$(id -u)" -eq 0 ]; then
  id "$os_user" >/dev/null 2>&1 || die "OS user $os_user does not exist"
  as_user=(runuser -u "$os_user" --)
fi

if [ -f "$base/backup_manifest" ]; then
  echo "recover: verifying base backup $base"
  "$bin_dir/pg_verifybackup" "$base" >/dev/null || die "pg_verifybackup failed: the base backup is damaged"
else
  echo "recover: warning: $base has no backup_manifest; copying it unverified" >&2
fi

echo "recover: copying base backup into $data"
mkdir -p "$data"
cp -a "$base/." "$data/"
rm -f "$data/postmaster.pid" "$data/standby.signal" "$data/recovery.signal" "$data/backup_manifest"
if [ "${#as_user[@]}" -gt 0 ]; then chown -R "$os_user:" "$data"; fi
chmod 700 "$data"

cat >>"$data/postgresql.auto.conf" <<EOF

# --- point-in-time recovery, written by ops/pitr/recover.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)
restore_command = 'cp "$archive/%f" "%p"'
recovery_target_time = '$target'
recovery_target_action = 'promote'
recovery_target_timeline = 'latest'
# Never write into the original cluster's archive; re-enable with a new archive if this becomes the primary.
archive_mode = 'off'
port = $port
listen_addresses = '$listen'
unix_socket_directories = '$socket_dir'
EOF
touch "$data/recovery.signal"
if [ "${#as_user[@]}" -gt 0 ]; then chown "$os_user:" "$data/postgresql.auto.conf" "$data/recovery.signal"; fi

log="$data/pitr-recovery.log"
if [ "$start" -eq 0 ]; then
  echo "recover: prepared $data; start it with: ${as_user[*]} $bin_dir/pg_ctl -D $data -l $log start"
  exit 0
fi

echo "recover: starting PostgreSQL $major on port $port, replaying WAL to $target"
"${as_user[@]}" touch "$log"
if ! "${as_user[@]}" "$bin_dir/pg_ctl" -D "$data" -l "$log" -w -t "$timeout" start >/dev/null; then
  echo "recover: the server did not start; end of $log:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
fi

psql=("${as_user[@]}" "$bin_dir/psql" -X -At -h "$socket_dir" -p "$port" -d postgres)
deadline=$((SECONDS + timeout))
until [ "$("${psql[@]}" -c 'SELECT pg_is_in_recovery()' 2>/dev/null || echo error)" = "f" ]; do
  if ! "${as_user[@]}" "$bin_dir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    echo "recover: the server stopped during recovery; end of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "recover: still in recovery after ${timeout}s; end of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  sleep 0.5
done

stopped=$(grep -E 'recovery stopping (before|after)' "$log" | tail -n 1 || true)
timeline=$(grep -E 'selected new timeline ID' "$log" | tail -n 1 || true)
echo "recover: ${stopped:-recovery reached the end of the archived WAL}"
[ -z "$timeline" ] || echo "recover: $timeline"
echo "recover: done: $data is running on port $port (archive_mode off)"
