#!/usr/bin/env bash
# HTTP throughput of the SQLite store against the memory store, in the same run: the test
# server (2 workers, global rules 20/1s + 100/10s, a ban rule) under wrk, every request from a
# different client. Prints requests/s of each and the ratio.
#
#   CARGO_TARGET_DIR=/work/target-sqlite bash tests/bench/sqlite_vs_memory.sh [seconds] [connections]
#
# Needs wrk (apt-get install -y wrk). Environment: DURABILITY=normal|full (SQLite store),
# CLIENTS=n to cycle over n clients (default: a new client for every request).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
conns=${2:-64}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p floodgate-tests --bin floodgate-test-server
bin="$target/release/floodgate-test-server"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

run() { # name db
  local out="$work/$1.out"
  FLOODGATE_DB=$2 FLOODGATE_GLOBAL="20/1s,100/10s" FLOODGATE_DURABILITY=${DURABILITY:-normal} \
    PORT=0 RUST_LOG=off "$bin" >"$out" 2>"$work/$1.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
  local port
  port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out")
  wrk -t2 -c"$conns" -d"${secs}s" -s tests/bench/distinct_ips.lua "http://127.0.0.1:$port/ping" \
    | tee "$work/$1.wrk" >&2
  kill "$pid"
  awk '/Requests\/sec/ {print $2}' "$work/$1.wrk"
}

mem=$(run memory memory)
sql=$(run sqlite "$work/bench.db")
echo "memory: $mem req/s"
echo "sqlite (${DURABILITY:-normal}): $sql req/s"
awk -v m="$mem" -v s="$sql" 'BEGIN { printf "ratio sqlite/memory: %.2f\n", s / m }'
