#!/usr/bin/env bash
# The main job on a fresh machine: find or start a PostgreSQL server, build the
# daemon, serve the recorded Workday, BambooHR, SAP S/4HANA and NetSuite
# fixtures on a free loopback port, sync all four, show `status`, then
# `explain` a worker of each HR source (the BambooHR one was deleted in its
# source) and where a journal line's amount came from.
#
# DATABASE_URL, when set, names the database to use (created if missing);
# otherwise the local server at 127.0.0.1:5432 is used if it lets
# `postgres` in, else a private server under target/postgres
# (examples/postgres.sh; it stays up for the next run).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }

step "PostgreSQL"
if [ -n "${DATABASE_URL:-}" ]; then
  bash examples/postgres.sh url >/dev/null   # checks that server, fails clearly if it does not answer
else
  admin="$(bash examples/postgres.sh url)"
  export DATABASE_URL="${admin%/*}/sync_demo"
fi
echo "database: $(echo "$DATABASE_URL" | sed -E 's#://([^:@/]*):[^@/]*@#://\1:***@#')"

export SYNC_RAW_DIR="${SYNC_RAW_DIR:-$PWD/target/demo-raw}"
export WORKDAY_CLIENT_SECRET="${WORKDAY_CLIENT_SECRET:-demo-client-secret}"
export WORKDAY_REFRESH_TOKEN="${WORKDAY_REFRESH_TOKEN:-demo-refresh-token}"
export BAMBOOHR_API_KEY="${BAMBOOHR_API_KEY:-demo-bamboo-key}"
export SAP_PASSWORD="${SAP_PASSWORD:-demo-sap-password}"
for v in NETSUITE_CONSUMER_KEY NETSUITE_CONSUMER_SECRET NETSUITE_TOKEN_ID NETSUITE_TOKEN_SECRET; do
  export "$v=${!v:-demo-${v,,}}"   # any value: the fixture account checks the realm and the signature method
done
bin=target/release/sync-daemon
cfg=examples/fixtures.toml

if [ -x "$bin" ]; then
  step "building the daemon (cargo build --release; seconds when nothing changed)"
else
  step "building the daemon (cargo build --release; 5 to 8 minutes the first time on two cores)"
fi
cargo build --release -p sync-daemon

step "serving the recorded Workday, BambooHR, SAP and NetSuite fixtures on a free loopback port"
# It prints its base URL alone on stdout once it listens; nothing means it failed.
exec 3< <(exec $bin serve-fixtures --listen 127.0.0.1:0 --pages fixtures/workday/workers)
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
if ! read -r -t 60 FIXTURE_URL <&3 || [ -z "$FIXTURE_URL" ]; then
  echo "demo: the fixture server did not start (its error is above)" >&2
  exit 1
fi
export FIXTURE_URL

step "sync-daemon migrate (creates the database if needed)"
$bin --config $cfg migrate
step "sync-daemon sync workday-acme"
$bin --config $cfg sync workday-acme
step "sync-daemon sync bamboo-acme (the report, then the changed feed with a deletion)"
$bin --config $cfg sync bamboo-acme
step "sync-daemon sync sap-acme (cost centers, G/L accounts, suppliers, the journal of company code 1010)"
$bin --config $cfg sync sap-acme
step "sync-daemon sync netsuite-acme (SuiteQL, keyset-paged; throttled requests are retried)"
$bin --config $cfg sync netsuite-acme
step "sync-daemon status"
$bin --config $cfg status
# Logan McNeil, by Workday id (the first recorded worker)
step "sync-daemon explain worker c3dd75f6808578e6ec925f09a227f039"
$bin --config $cfg explain worker c3dd75f6808578e6ec925f09a227f039
# BambooHR employee 6, deleted in the changed feed: the deletion's provenance
step "sync-daemon explain worker 6 --connection bamboo-acme"
$bin --config $cfg explain worker 6 --connection bamboo-acme

# A yen credit SAP sent unsigned (DebitCreditCode H): where its amount came from
step "sync-daemon explain journal_line '1010|2024|100000002|000002' amount --connection sap-acme"
$bin --config $cfg explain journal_line '1010|2024|100000002|000002' amount --connection sap-acme

step "done"
cat <<EOT
To run more commands against this database:
  export DATABASE_URL='$DATABASE_URL' SYNC_RAW_DIR='$SYNC_RAW_DIR'
  $bin --config $cfg status
(explain and status need nothing more; replay also needs FIXTURE_URL; sync needs a fixture
server, started with \`$bin serve-fixtures &\`, which prints the FIXTURE_URL to export, and
WORKDAY_CLIENT_SECRET and WORKDAY_REFRESH_TOKEN, any value each, BAMBOOHR_API_KEY=demo-bamboo-key,
SAP_PASSWORD=demo-sap-password and the four NETSUITE_* tokens, any value each.)
EOT
if [ -f target/postgres/port ] && [[ "$DATABASE_URL" == *":$(cat target/postgres/port)/"* ]]; then
  echo "The private PostgreSQL keeps running for the next run; stop it with: bash examples/postgres.sh stop"
fi
