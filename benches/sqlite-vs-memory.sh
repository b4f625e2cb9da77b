#!/usr/bin/env bash
# HTTP throughput of the SQLite store against the memory store, in the same run: the test
# server (2 workers, global rules 20/1s + 100/10s, a ban rule) under wrk, every request from a
# different client. Configurations run in interleaved rounds (memory, then each SQLite
# durability, again and again), so that a noisy machine affects them alike; prints each
# round with its ratio to that round's memory run, then the median requests/s of each, its
# ratio to the memory store's median, and the median and range of the rounds' ratios.
#
#   CARGO_TARGET_DIR=/work/target-sqlite bash benches/sqlite-vs-memory.sh [seconds] [connections]
#
# Needs wrk (installed with apt-get when missing). Environment: ROUNDS (default 3), MODES (SQLite
# durabilities, default "batched normal"; also "full"), CLIENTS=n to cycle over n clients
# (default: a new client for every request).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
rounds=${ROUNDS:-3}
modes=${MODES:-batched normal}
target=${CARGO_TARGET_DIR:-target}
if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
cargo build --release -q -p floodgate-tests --bin floodgate-test-server
bin="$target/release/floodgate-test-server"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

run() { # name db durability -> requests/s
  local out="$work/$1.out"
  rm -f "$2" "$2-wal" "$2-shm"
  FLOODGATE_DB=$2 FLOODGATE_GLOBAL="20/1s,100/10s" FLOODGATE_DURABILITY=$3 \
    PORT=0 RUST_LOG=off "$bin" >"$out" 2>"$work/$1.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do grep -q listening "$out" && break; sleep 0.1; done
  local port
  port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out")
  if [[ -z $port ]]; then
    echo "the $1 server did not start within 30 s: $(cat "$work/$1.err")" >&2
    exit 1
  fi
  wrk -t2 -c"$conns" -d"${secs}s" -s benches/distinct_ips.lua "http://127.0.0.1:$port/ping" \
    >"$work/$1.wrk"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  awk '/Requests\/sec/ {print $2}' "$work/$1.wrk"
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

for r in $(seq "$rounds"); do
  mem_r=$(run memory memory normal | tee -a "$work/memory.all")
  line="round $r: memory $mem_r"
  for m in $modes; do
    s_r=$(run "sqlite-$m" "$work/bench.db" "$m" | tee -a "$work/sqlite-$m.all")
    line+=", sqlite-$m $s_r ($(awk -v m="$mem_r" -v s="$s_r" 'BEGIN { printf "%.2f", s / m }'))"
    awk -v m="$mem_r" -v s="$s_r" 'BEGIN { print s / m }' >>"$work/sqlite-$m.ratio"
  done
  echo "$line req/s"
done
mem=$(median <"$work/memory.all")
echo "median memory: $mem req/s"
for m in $modes; do
  s=$(median <"$work/sqlite-$m.all")
  r=$(median <"$work/sqlite-$m.ratio")
  spread=$(sort -g "$work/sqlite-$m.ratio" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }')
  awk -v m="$mem" -v s="$s" -v n="$m" -v r="$r" -v spread="$spread" \
    'BEGIN { printf "median sqlite-%s: %s req/s, ratio to memory %.2f; per round: median %.2f, range %s\n", n, s, s / m, r, spread }'
done
