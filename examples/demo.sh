#!/usr/bin/env bash
# The main job on a fresh machine: serve the recorded Workday fixtures on
# loopback, sync them into the local Postgres, then explain one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/sync_demo}"
export SYNC_RAW_DIR="${SYNC_RAW_DIR:-$PWD/target/demo-raw}"
export WORKDAY_CLIENT_SECRET="${WORKDAY_CLIENT_SECRET:-demo-client-secret}"
export WORKDAY_REFRESH_TOKEN="${WORKDAY_REFRESH_TOKEN:-demo-refresh-token}"

pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
db="${DATABASE_URL##*/}"
psql "${DATABASE_URL%/*}/postgres" -tAc "select 1 from pg_database where datname = '$db'" | grep -q 1 \
  || psql "${DATABASE_URL%/*}/postgres" -qc "create database \"$db\""

cargo build --release -q -p sync-daemon
bin=target/release/sync-daemon
cfg=examples/fixtures.toml

$bin serve-fixtures --listen 127.0.0.1:18080 --pages fixtures/workday/workers &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/18080) 2>/dev/null && break; sleep 0.1; done

$bin --config $cfg migrate
$bin --config $cfg sync workday-acme
$bin --config $cfg status
echo
# Logan McNeil, by Workday id (the first recorded worker)
$bin --config $cfg explain worker c3dd75f6808578e6ec925f09a227f039
