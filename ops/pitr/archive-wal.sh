#!/usr/bin/env bash
# WAL archiving for point-in-time recovery: PostgreSQL's archive_command.
#
#   archive_mode = on
#   archive_command = '/usr/local/bin/shieldx-archive-wal "%p" "%f" /srv/pg-wal-archive'
#
# Copies one finished WAL segment (or .history/.backup file) into the archive
# directory: to a temp name, fsynced, then renamed, so the archive never holds
# a half-written segment. Exit 0 only when the file is safely archived —
# PostgreSQL keeps the segment and retries on any other exit. A file already
# archived with identical content (a retry after a crash) is success; one with
# different content is an error: never overwrite archived WAL.
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: archive-wal.sh <%p: path of the segment> <%f: its file name> <archive dir>" >&2
  exit 2
fi
src=$1
name=$2
archive=$3
dest="$archive/$name"

if [ ! -d "$archive" ]; then
  echo "archive-wal: archive directory $archive does not exist" >&2
  exit 1
fi
if [ -e "$dest" ]; then
  if cmp -s "$src" "$dest"; then
    exit 0
  fi
  echo "archive-wal: $dest already exists with different content; refusing to overwrite" >&2
  exit 1
fi
tmp="$archive/.$name.tmp.$$"
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp"
sync "$tmp"
mv "$tmp" "$dest"
sync "$archive"
trap - EXIT
