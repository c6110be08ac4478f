#!/usr/bin/env bash
# Benchmark: N Workday workers served from loopback by `sync-daemon serve-fixtures`,
# synced and replayed into a fresh database, beside a plain COPY of the same rows
# measured in the same run.
# Prints records/s and the daemon's peak RSS for each step.
#
#   bash sync-daemon/benches/workers.sh [N]          (N = 100000 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-100000}"
# The server: PGBASE (a URL without database), else what examples/postgres.sh finds or starts.
PGBASE="${PGBASE:-$(DATABASE_URL= bash examples/postgres.sh url | sed 's#/[^/]*$##')}"
DB=sync_bench
DATA=target/bench-data/n$N
# The shared workload's generator (outside this repository): BENCH_GEN.
BENCH_GEN="${BENCH_GEN:-../shared/bench/gen_workers.py}"
[ -f "$DATA/manifest.json" ] || python3 "$BENCH_GEN" --n "$N" --out target/bench-data
cargo build --release -q -p sync-daemon
bin=$PWD/target/release/sync-daemon

exec 3< <(exec $bin serve-fixtures --listen 127.0.0.1:0 --pages "$DATA/pages/l100" --tenant bench --api-path ccx/api/v1 2>/dev/null)
server=$!
cfg=$(mktemp --suffix .toml)
trap 'kill $server 2>/dev/null || true; rm -f "$cfg"' EXIT
read -r -t 120 base <&3 && [ -n "$base" ] || { echo "the fixture server did not start" >&2; exit 1; }

psql "$PGBASE/postgres" -qc "drop database if exists $DB" -c "create database $DB"
export DATABASE_URL="$PGBASE/$DB"
export SYNC_RAW_DIR="$PWD/target/bench-raw"
rm -rf "$SYNC_RAW_DIR"
cat > "$cfg" <<TOML
[database]
url = "\${DATABASE_URL}"
max_connections = 4
[raw_store]
url = "file://\${SYNC_RAW_DIR}"
[[connection]]
name = "bench"
connector = "workday"
base_url = "$base"
tenant = "bench"
api_path = "ccx/api/v1"
[connection.auth]
strategy = "oauth2_refresh_token"
token_url = "$base/ccx/oauth2/bench/token"
client_id = "demo-client"
client_secret = "demo-client-secret"
refresh_token = "demo-refresh-token"
TOML


# Plain COPY of the same rows into a logged table: the physical limit.
cols=$(head -1 "$DATA/workers.csv" | sed 's/,/ text,/g; s/$/ text/')
psql "$DATABASE_URL" -qc "create table copy_baseline ($cols)"
t0=$(date +%s.%N)
psql "$DATABASE_URL" -qc "\\copy copy_baseline from '$DATA/workers.csv' with (format csv, header)"
t1=$(date +%s.%N)
copy_s=$(echo "$t1 - $t0" | bc -l)
copy_rps=$(echo "$N / $copy_s" | bc -l)

$bin --config "$cfg" migrate > /dev/null
step() { # name, then the daemon's arguments
  local name=$1; shift
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o /tmp/bench-rss "$bin" --config "$cfg" "$@" --json > /tmp/bench-out
  t1=$(date +%s.%N)
  rss=$(cat /tmp/bench-rss)
  local s rps records
  records=$(python3 -c 'import json,sys; d=json.load(open("/tmp/bench-out")); print(d["changed"]+d["unchanged"]+d["dead_lettered"]+d.get("superseded",0))')
  s=$(echo "$t1 - $t0" | bc -l)
  rps=$(echo "$records / $s" | bc -l)
  printf '| %-38s | %7s | %8.2f s | %9.0f | %5.2f | %6.0f MB |\n' "$name" "$records" "$s" "$rps" "$(echo "$rps / $copy_rps" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}
# Readers: `explain` of a random worker (the binary, as a user runs it) and
# a count of workers per org unit, timed each; run in a loop beside the
# full sync, then on the idle database. Prints p50 and p99 in ms.
readers() { # output file; loops until killed, or for $2 rounds
  local out=$1 rounds=${2:-0} i=0 id t0 t1 t2
  : > "$out"
  while [ "$rounds" -eq 0 ] || [ "$i" -lt "$rounds" ]; do
    i=$((i + 1))
    id=$(psql "$DATABASE_URL" -tAc "select id from worker tablesample system (1) limit 1" 2>/dev/null)
    if [ -z "$id" ]; then sleep 0.05; continue; fi
    t0=$(date +%s%N)
    "$bin" --config "$cfg" explain worker "$id" > /dev/null 2>&1 || true
    t1=$(date +%s%N)
    psql "$DATABASE_URL" -qtAc "select org_unit_id, count(*) from worker group by 1" > /dev/null
    t2=$(date +%s%N)
    echo "explain $(( (t1 - t0) / 1000 ))" >> "$out"
    echo "count $(( (t2 - t1) / 1000 ))" >> "$out"
  done
}
pct() { # file, kind, percentile → ms
  grep "^$2 " "$1" | awk '{print $2}' | sort -n | awk -v p="$3" '{a[NR]=$1} END {if (NR == 0) {print "-"; exit} i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; printf "%.1f", a[i] / 1000}'
}

echo
echo "N = $N workers, $(nproc) cores, $(psql "$DATABASE_URL" -tAc 'show server_version')"
printf '| %-38s | %7s | %10s | %9s | %5s | %9s |\n' "step" "records" "wall" "rows/s" "×COPY" "peak RSS"
printf '| %-38s | %7s | %8.2f s | %9.0f | %5.2f | %9s |\n' "psql \\copy (baseline, same run)" "$N" "$copy_s" "$copy_rps" 1 "-"
readers /tmp/bench-readers-sync &
reader_pid=$!
step "sync (fetch, raw store, map, upsert)" sync bench
kill $reader_pid 2>/dev/null || true
wait $reader_pid 2>/dev/null || true
step "re-sync, unchanged data" sync bench
step "replay, same mapping (all unchanged)" replay bench
psql "$DATABASE_URL" -qc "truncate worker, org_unit, location, dead_letter, source_link, derivation" -c "update raw_page set loaded_at = null"
step "replay of all pages into empty model" replay bench
step "replay --dry-run (nothing to change)" replay bench --dry-run
psql "$DATABASE_URL" -tAc "select 'workers loaded: ' || count(*) from worker"
# The same readers on the idle database (what autovacuum would have done
# after the load, this machine's Postgres does not: analyze it first).
psql "$DATABASE_URL" -qc "analyze"
readers /tmp/bench-readers-idle 40
echo
printf '| %-38s | %9s | %9s | %9s | %9s |\n' "readers (ms)" "explain p50" "p99" "count p50" "p99"
for w in idle sync; do
  f=/tmp/bench-readers-$w
  printf '| %-38s | %9s | %9s | %9s | %9s |\n' "$w ($(grep -c '^explain ' "$f") rounds)" \
    "$(pct "$f" explain 50)" "$(pct "$f" explain 99)" "$(pct "$f" count 50)" "$(pct "$f" count 99)"
done
