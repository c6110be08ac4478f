#!/usr/bin/env bash
# A PostgreSQL server for the demo and the tests, with nothing set up by hand.
#
#   bash examples/postgres.sh url     # print a superuser URL (database `postgres`) of a
#                                     # server that answers, starting a private one if needed
#   bash examples/postgres.sh start   # start the private server (idempotent), print its URL
#   bash examples/postgres.sh stop    # stop the private server (its data stays in target/)
#   bash examples/postgres.sh status  # is the private server running, and where
#
# `url` decides, in this order:
#   1. DATABASE_URL is set: that server, checked (the URL's own database, not `postgres`);
#   2. postgres://postgres@127.0.0.1:5432 answers and lets us in: that server;
#   3. otherwise a private, throwaway server: an `initdb` data directory under
#      target/postgres, on a free loopback port, superuser `postgres`, trust
#      authentication on 127.0.0.1 only, no Unix socket, fsync off (its data is
#      disposable). It is left running for the next run; `stop` stops it.
# PostgreSQL refuses to run as root: run as root, the private server runs as the
# `postgres` user (or `nobody`). Without PostgreSQL binaries it says what to
# install, and installs them itself when root on Debian/Ubuntu (apt-get).
#
# Messages go to stderr; stdout carries only the URL.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${SYNC_PG_DIR:-$root/target/postgres}"
data="$dir/data"
default_url="postgres://postgres@127.0.0.1:5432/postgres"

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# The directory holding initdb/pg_ctl/postgres (Debian keeps them off PATH).
bindir() {
  local d
  for d in "${PG_BINDIR:-}" "$(command -v pg_config >/dev/null 2>&1 && pg_config --bindir || true)" \
           "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" \
           $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) \
           $(ls -d /usr/pgsql-*/bin 2>/dev/null | sort -V -r) \
           /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin /usr/local/pgsql/bin; do
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_hint() {
  cat >&2 <<'EOF'
postgres.sh: no PostgreSQL server binaries (initdb, pg_ctl, postgres) found.
  Debian/Ubuntu:  sudo apt-get install -y postgresql        (package `postgresql`)
  Fedora/RHEL:    sudo dnf install -y postgresql-server
  macOS:          brew install postgresql@16
  Or point DATABASE_URL at a server you have, e.g.
                  export DATABASE_URL=postgres://user@host:5432/sync_demo
EOF
}

ensure_binaries() {
  bindir >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "no PostgreSQL binaries: installing the Debian package \`postgresql\` (apt-get, as root)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; } \
      || { install_hint; exit 1; }
    bindir >/dev/null && return 0
  fi
  install_hint
  exit 1
}

# A client program: on PATH, else beside the server binaries.
client() {
  command -v "$1" 2>/dev/null && return 0
  local b; b="$(bindir || true)"
  [ -n "$b" ] && [ -x "$b/$1" ] && echo "$b/$1"
}

# Does a server listen at this URL? (pg_isready when present, else a TCP probe.)
reachable() {
  local url="$1" isready
  isready="$(client pg_isready || true)"
  if [ -n "$isready" ]; then
    # 0: accepting, 1: rejecting (starting up, shutting down): both mean a server is there.
    local rc=0
    "$isready" -q -t 3 -d "$url" || rc=$?
    [ $rc -le 1 ]
  else
    local hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"; hostport="${hostport%%\?*}"
    local host="${hostport%:*}" port="${hostport##*:}"
    [ "$host" = "$hostport" ] && port=5432
    timeout 3 bash -c "echo > /dev/tcp/${host:-127.0.0.1}/$port" 2>/dev/null
  fi
}

# Does a server answer at this URL and let us in? (psql when present, else a TCP probe.)
answers() {
  local url="$1" psql
  psql="$(client psql || true)"
  if [ -n "$psql" ]; then
    PGCONNECT_TIMEOUT=3 "$psql" "$url" -qtAc 'select 1' >/dev/null 2>&1
  else
    reachable "$url"
  fi
}

# Run a command as the server's owner: ourselves, or an unprivileged user when root.
owner=""
as_owner() {
  if [ -z "$owner" ]; then "$@"; else runuser -u "$owner" -- "$@"; fi
}

pick_owner() {
  [ "$(id -u)" = 0 ] || return 0
  if id postgres >/dev/null 2>&1; then owner=postgres; else owner=nobody; fi
  # The owner must reach the data directory; if it cannot (a private home), use /tmp.
  mkdir -p "$dir"
  chown "$owner" "$dir"
  if ! runuser -u "$owner" -- test -w "$dir"; then
    dir="${TMPDIR:-/tmp}/sync-daemon-postgres-$(echo "$root" | cksum | cut -d' ' -f1)"
    data="$dir/data"
    mkdir -p "$dir" && chown "$owner" "$dir"
    say "the $owner user cannot write under $root/target: using $dir"
  fi
}

running() {
  [ -f "$data/postmaster.pid" ] && as_owner "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1
}

private_url() { echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"; }

free_port() {
  local p
  for p in $(shuf -i 20000-60000 -n 50 2>/dev/null || seq 54329 54379); do
    (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  die "no free loopback port found"
}

start() {
  ensure_binaries
  local bin; bin="$(bindir)"
  pick_owner
  mkdir -p "$dir"
  [ -n "$owner" ] && chown "$owner" "$dir"
  exec 9>"$dir/lock"
  command -v flock >/dev/null && flock 9   # one starter at a time (util-linux; absent on macOS)
  if running && [ -f "$dir/port" ]; then
    private_url
    return 0
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "creating a private PostgreSQL data directory in $data ($("$bin/postgres" --version))"
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
  fi
  local port tries=0
  while :; do
    port="$(free_port)"
    [ -n "$owner" ] && touch "$dir/server.log" && chown "$owner" "$dir/server.log"
    if as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
         -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c max_connections=200" \
         start >/dev/null 2>&1 9>&-; then
      break
    fi
    tries=$((tries + 1))
    if [ $tries -ge 3 ]; then
      tail -n 20 "$dir/server.log" >&2 || true
      die "the private PostgreSQL server did not start (log: $dir/server.log)"
    fi
  done
  echo "$port" >"$dir/port"
  say "started a private PostgreSQL at $(private_url) (data in $data); stop it with: bash examples/postgres.sh stop"
  private_url
}

stop() {
  if ! bindir >/dev/null || [ ! -f "$data/postmaster.pid" ]; then
    say "no private PostgreSQL is running (data: $data)"
    return 0
  fi
  [ "$(id -u)" = 0 ] && owner="$(stat -c %U "$data")"
  as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null && say "stopped the private PostgreSQL (data kept in $data)"
}

case "${1:-url}" in
  url)
    if [ -n "${DATABASE_URL:-}" ]; then
      reachable "$DATABASE_URL" || die "no PostgreSQL answers at DATABASE_URL=$(echo "$DATABASE_URL" | sed -E 's#://([^:@/]*):[^@/]*@#://\1:***@#') (checked with pg_isready, or a TCP connect): start that server, fix the URL, or unset DATABASE_URL to use a private server"
      echo "$DATABASE_URL"
    elif answers "$default_url"; then
      echo "$default_url"
    else
      if [ -f "$dir/port" ] && answers "$(private_url)"; then private_url; else
        say "no PostgreSQL answers at $default_url: using a private server"
        start
      fi
    fi
    ;;
  start) start ;;
  stop) stop ;;
  status)
    if [ -f "$dir/port" ] && [ -f "$data/postmaster.pid" ] && answers "$(private_url)"; then
      say "running at $(private_url) (data in $data)"
    else
      say "not running (data: $data)"
      exit 1
    fi
    ;;
  *) die "usage: bash examples/postgres.sh [url|start|stop|status]" ;;
esac
