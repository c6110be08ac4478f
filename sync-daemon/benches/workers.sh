#!/usr/bin/env bash
# Benchmark: N Workday workers served from loopback by `sync-daemon serve-fixtures`,
# synced, re-synced, synced incrementally and replayed into a fresh database,
# beside a plain COPY of the same rows measured in the same run, for each N.
# Prints one table: records, wall time, records/s, the ratio to COPY, the
# share of the full sync's wall time, and the daemon's peak RSS per step;
# then reader latencies (p50/p99) during a full sync and on the idle
# database. The readers run beside a second full sync into a fresh database
# (the last step), so that their own work does not slow the timed one.
#
#   bash sync-daemon/benches/workers.sh [N ...]     (N = 100000 1000000 by default)
#
# The workload is the shared generator's (`gen_workers.py`, BENCH_GEN): the
# first snapshot, and the second one in which 1 % of the workers changed
# (`--changed-pct 1`) for the incremental step. The connection asks for
# "changed since" (`changed_since_param`), so its first pull is the full
# sync and a later pull asks only for what changed; the re-sync of
# unchanged data is a full pull of the same connection (a config without
# the parameter).
#
# Autovacuum: this machine's PostgreSQL runs without it, unlike any real
# deployment. The script runs `ANALYZE` where autovacuum would have: after
# the full sync (before the re-sync) and before the idle readers.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
# The server: PGBASE (a URL without database), else what examples/postgres.sh finds or starts.
PGBASE="${PGBASE:-$(DATABASE_URL= bash examples/postgres.sh url | sed 's#/[^/]*$##')}"
DB=sync_bench
# The shared workload's generator (outside this repository): BENCH_GEN.
BENCH_GEN="${BENCH_GEN:-../shared/bench/gen_workers.py}"
cargo build --release -q -p sync-daemon
bin=$PWD/target/release/sync-daemon
out=$(mktemp -d)
server=
# Raw objects go to a new directory per sync into a fresh database, all
# removed at the end: files deleted just before a sync make the file system
# slow to create new ones (ext4 skips recently freed inodes), which no real
# store sees on every run.
raw_dirs="$PWD/target/bench-raw"
rm -rf "$raw_dirs"
trap 'kill $server 2>/dev/null || true; rm -rf "$out" "$raw_dirs"' EXIT
export DATABASE_URL="$PGBASE/$DB"
fresh_raw() { export SYNC_RAW_DIR="$raw_dirs/$N-$1"; mkdir -p "$SYNC_RAW_DIR"; }

serve() { # pages directory → sets $base (the server's URL) and $server
  [ -n "$server" ] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  exec 3< <(exec "$bin" serve-fixtures --listen 127.0.0.1:0 --pages "$1" --tenant bench --api-path ccx/api/v1 2>/dev/null)
  server=$!
  read -r -t 300 base <&3 && [ -n "$base" ] || { echo "the fixture server did not start" >&2; exit 1; }
}
config() { # file, extra connection keys
  cat > "$1" <<TOML
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
$2
[connection.auth]
strategy = "oauth2_refresh_token"
token_url = "$base/ccx/oauth2/bench/token"
client_id = "demo-client"
client_secret = "demo-client-secret"
refresh_token = "demo-refresh-token"
TOML
}
row() { printf '| %9s | %-40s | %8s | %9s | %9s | %6s | %7s | %8s |\n' "$@" | tee -a "$out/table"; }
step() { # name, config, then the daemon's arguments; sets $last_s
  local name=$1 cfg=$2; shift 2
  local t0 t1 rss s rps records share
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$out/rss" "$bin" --config "$cfg" "$@" --json > "$out/step.json"
  t1=$(date +%s.%N)
  rss=$(tail -1 "$out/rss")
  records=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["changed"]+d["unchanged"]+d["dead_lettered"]+d.get("superseded",0))' "$out/step.json")
  s=$(echo "$t1 - $t0" | bc -l)
  rps=$(echo "$records / $s" | bc -l)
  last_s=$s
  share=-
  [ -n "${sync_s:-}" ] && share=$(printf '%.0f %%' "$(echo "100 * $s / $sync_s" | bc -l)")
  row "$N" "$name" "$records" "$(printf '%.2f s' "$s")" "$(printf '%.0f' "$rps")" \
    "$(printf '%.3f' "$(echo "$rps / $copy_rps" | bc -l)")" "$share" "$(printf '%.0f MB' "$(echo "$rss / 1024" | bc -l)")"
}
# Readers: `explain` of a random worker (the binary, as a user runs it) and
# a count of workers per org unit, timed each; run in a loop beside the
# full sync, then on the idle database. Times in µs.
readers() { # config, output file, rounds (0: until killed)
  local cfg=$1 file=$2 rounds=$3 i=0 id t0 t1 t2
  : > "$file"
  while [ "$rounds" -eq 0 ] || [ "$i" -lt "$rounds" ]; do
    i=$((i + 1))
    id=$(psql "$DATABASE_URL" -tAc "select id from worker tablesample system (0.1) limit 1" 2>/dev/null || true)
    if [ -z "$id" ]; then sleep 0.05; continue; fi
    t0=$(date +%s%N)
    "$bin" --config "$cfg" explain worker "$id" > /dev/null 2>&1 || true
    t1=$(date +%s%N)
    psql "$DATABASE_URL" -qtAc "select org_unit_id, count(*) from worker group by 1" > /dev/null
    t2=$(date +%s%N)
    echo "explain $(( (t1 - t0) / 1000 ))" >> "$file"
    echo "count $(( (t2 - t1) / 1000 ))" >> "$file"
  done
}
pct() { # file, kind, percentile → ms
  grep "^$2 " "$1" | awk '{print $2}' | sort -n | awk -v p="$3" '{a[NR]=$1} END {if (NR == 0) {print "-"; exit} i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; printf "%.1f", a[i] / 1000}'
}

: > "$out/table"
: > "$out/readers"
for N in "${SIZES[@]}"; do
  DATA=target/bench-data/n$N
  [ -f "$DATA/manifest.json" ] || python3 "$BENCH_GEN" --n "$N" --out target/bench-data
  [ -f "$DATA-c1/manifest.json" ] || python3 "$BENCH_GEN" --n "$N" --out target/bench-data --changed-pct 1
  psql "$PGBASE/postgres" -qc "drop database if exists $DB" -c "create database $DB"
  fresh_raw 1
  unset sync_s

  # Plain COPY of the same rows into a logged table: the physical limit.
  cols=$(head -1 "$DATA/workers.csv" | sed 's/,/ text,/g; s/$/ text/')
  psql "$DATABASE_URL" -qc "create table copy_baseline ($cols)"
  t0=$(date +%s.%N)
  psql "$DATABASE_URL" -qc "\\copy copy_baseline from '$DATA/workers.csv' with (format csv, header)"
  t1=$(date +%s.%N)
  copy_s=$(echo "$t1 - $t0" | bc -l)
  copy_rps=$(echo "$N / $copy_s" | bc -l)
  psql "$DATABASE_URL" -qc "drop table copy_baseline"
  row "$N" 'psql \copy (baseline, same run)' "$N" "$(printf '%.2f s' "$copy_s")" "$(printf '%.0f' "$copy_rps")" 1 - -

  serve "$DATA/pages/l100"
  config "$out/incr.toml" 'changed_since_param = "updatedFrom"'
  config "$out/full.toml" ''
  "$bin" --config "$out/incr.toml" migrate > /dev/null
  step "sync (fetch, raw store, map, upsert)" "$out/incr.toml" sync bench
  sync_s=$last_s
  psql "$DATABASE_URL" -qc "analyze"
  step "re-sync, unchanged data (full pull)" "$out/full.toml" sync bench
  serve "$DATA-c1/pages/l100"
  config "$out/incr.toml" 'changed_since_param = "updatedFrom"'
  step "incremental sync, 1 % changed" "$out/incr.toml" sync bench
  step "replay, same mapping (all unchanged)" "$out/incr.toml" replay bench
  step "replay --dry-run (nothing to change)" "$out/incr.toml" replay bench --dry-run
  psql "$DATABASE_URL" -qc "truncate worker, org_unit, location, dead_letter, source_link, derivation" \
    -c "update raw_page set loaded_at = null"
  step "replay of all pages into empty model" "$out/incr.toml" replay bench
  # The full sync again, into a fresh database, with the reader loop beside it.
  serve "$DATA/pages/l100"
  config "$out/incr.toml" 'changed_since_param = "updatedFrom"'
  psql "$PGBASE/postgres" -qc "drop database $DB" -c "create database $DB"
  fresh_raw 2
  "$bin" --config "$out/incr.toml" migrate > /dev/null
  readers "$out/incr.toml" "$out/readers-sync" 0 &
  reader_pid=$!
  step "sync again, the reader loop beside it" "$out/incr.toml" sync bench
  kill $reader_pid 2>/dev/null || true
  wait $reader_pid 2>/dev/null || true
  # The same readers on the idle database, analyzed as autovacuum would have.
  psql "$DATABASE_URL" -qc "analyze"
  readers "$out/incr.toml" "$out/readers-idle" 40
  for w in idle sync; do
    f=$out/readers-$w
    printf '| %9s | %-40s | %11s | %9s | %9s | %9s |\n' "$N" "$w ($(grep -c '^explain ' "$f") rounds)" \
      "$(pct "$f" explain 50)" "$(pct "$f" explain 99)" "$(pct "$f" count 50)" "$(pct "$f" count 99)" >> "$out/readers"
  done
done

echo
echo "$(nproc) cores, PostgreSQL $(psql "$DATABASE_URL" -tAc 'show server_version'), $(date -u +%Y-%m-%d)"
printf '| %9s | %-40s | %8s | %9s | %9s | %6s | %7s | %8s |\n' N step records wall rows/s ×COPY "% sync" "peak RSS"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ----------: :----------------------------------------- -------: --------: --------: -----: ------: -------:
cat "$out/table"
echo
printf '| %9s | %-40s | %11s | %9s | %9s | %9s |\n' N "readers (ms)" "explain p50" p99 "count p50" p99
printf '|%s|%s|%s|%s|%s|%s|\n' ----------: :----------------------------------------- ----------: --------: --------: --------:
cat "$out/readers"
