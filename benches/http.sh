#!/usr/bin/env bash
# HTTP benchmark of floodgate beside bare actix-web and actix-governor. One command:
#
#   CARGO_TARGET_DIR=/path/to/target benches/http.sh
#
# 1. Builds the release servers (bins `server-*` of floodgate-bench) and `bench-client`.
# 2. Throughput and latency with wrk: every server on 127.0.0.1 with one worker, each request
#    carrying one of 10,000 client addresses (benches/wrk_ips.lua); runs interleaved
#    bare, X, bare, Y, ... for ROUNDS rounds so that drift cancels; each configuration is
#    compared with the bare runs next to it.
# 3. Instructions per request with callgrind: each server under valgrind answers WARMUP + N
#    keep-alive requests from bench-client (one connection, same addresses), then /shutdown;
#    done for N=N1 and N=N2, (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shut-down.
#    The warm-up makes every client known, so the measured requests are repeat clients.
#    Instructions spent in once_cell initialisers are excluded (see below).
#
# Configurations: bare, floodgate (memory store), floodgate-metrics (the same with its
# Prometheus metrics registered), floodgate-refusing, floodgate-sqlite (the
# same rules as floodgate on an SqliteStore, its file in a fresh temp dir for every server
# start), floodgate-sqlite-batched (the same with Durability::Batched), floodgate-redis (the
# same on a RedisStore, prefix `bench`, on a redis-server this script starts on a free
# loopback port with `--save '' --appendonly no`, flushed before every server start and
# stopped on exit), governor, governor-refusing.
# The SQLite and Redis configurations are in the default list of the wrk part only. Callgrind
# leaves them out by default (CG_CONFIGS): their decisions are made on another thread (the
# SQLite store thread) or in another process (redis-server). Named in CG_CONFIGS, they are
# counted over all threads of the server process (callgrind's default), so SQLite's thread is
# included but Redis's own CPU is not. Under PIN=1, redis-server runs on the servers' CPU
# (as does the SQLite thread, inheriting the server's affinity): store work competes with the
# app, never with wrk.
#
# Settings (environment): DURATION (10s), CONNS (16), ROUNDS (2), N1 (2000), N2 (6000),
# WARMUP (10000), PORT_BASE (18080), SKIP_WRK=1, SKIP_CALLGRIND=1, CONFIGS (all),
# CG_CONFIGS (CONFIGS without the floodgate-sqlite* and floodgate-redis ones), REDIS_PORT
# (first free port from 16379), PIN (1: with
# 2+ CPUs, servers run on CPU 0 and wrk on CPU 1, so that they never share a core by chance,
# which otherwise makes latencies bimodal; 0: let the scheduler place them).
# Output files (callgrind profiles and their annotations) go to $CARGO_TARGET_DIR/http-bench,
# named with CG_TAG (default empty) before the configuration; the callgrind part also writes
# `CONFIG INSTRUCTIONS_PER_REQUEST` lines to $OUT/${CG_TAG}instructions.txt (used by
# benches/hot-path.sh). SKIP_BUILD=1 skips the build (a caller that built already).
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-2}
N1=${N1:-2000}
N2=${N2:-6000}
WARMUP=${WARMUP:-10000}
PORT_BASE=${PORT_BASE:-18080}
CONFIGS=(${CONFIGS:-bare floodgate floodgate-metrics floodgate-refusing floodgate-sqlite floodgate-sqlite-batched floodgate-redis governor governor-refusing})
DEFAULT_CG=()
for c in "${CONFIGS[@]}"; do
  [[ $c == floodgate-sqlite* || $c == floodgate-redis ]] || DEFAULT_CG+=("$c")
done
CG_CONFIGS=(${CG_CONFIGS:-${DEFAULT_CG[*]}})
CG_TAG=${CG_TAG:-}
PIN=${PIN:-1}
BIN=$CARGO_TARGET_DIR/release
SERVER_CPU=() WRK_CPU=()
if [[ $PIN == 1 && $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0) WRK_CPU=(taskset -c 1)
fi
OUT=$CARGO_TARGET_DIR/http-bench
LUA=$PWD/benches/wrk_ips.lua
mkdir -p "$OUT"

need() { # need COMMAND PACKAGE: installs the Debian package when the command is missing.
  command -v "$1" >/dev/null && return
  echo "installing $2" >&2
  if ! apt-get install -y "$2" >/dev/null 2>&1; then
    apt-get update >/dev/null && apt-get install -y "$2" >/dev/null
  fi
}
[[ ${SKIP_WRK:-0} == 1 ]] || need wrk wrk
[[ ${SKIP_CALLGRIND:-0} == 1 ]] || need valgrind valgrind
# Whether a part that runs uses the Redis configuration.
USES_REDIS=0
[[ ${SKIP_WRK:-0} != 1 && " ${CONFIGS[*]} " == *" floodgate-redis "* ]] && USES_REDIS=1
[[ ${SKIP_CALLGRIND:-0} != 1 && " ${CG_CONFIGS[*]} " == *" floodgate-redis "* ]] && USES_REDIS=1
[[ $USES_REDIS == 0 ]] || need redis-server redis-server

[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release -q -p floodgate-bench --bins

declare -A PID PORT
REDIS_PID=
STORE_TMP=$(mktemp -d "${TMPDIR:-/tmp}/floodgate-http-bench.XXXXXX")
cleanup() {
  for c in "${!PID[@]}"; do kill "${PID[$c]}" 2>/dev/null || true; done
  [[ -z $REDIS_PID ]] || kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$STORE_TMP"
}
trap cleanup EXIT INT TERM

wait_port() { # wait_port PORT: until something listens there (60 s at most).
  for _ in $(seq 600); do
    listening "$1" && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# redis-server for floodgate-redis: in memory only, on the first free port from 16379.
if [[ $USES_REDIS == 1 ]]; then
  REDIS_PORT=${REDIS_PORT:-16379}
  while listening "$REDIS_PORT"; do REDIS_PORT=$((REDIS_PORT + 1)); done
  "${SERVER_CPU[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize no >"$OUT/redis-server.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$REDIS_PORT"
  echo "redis-server $(redis-server --version | awk '{ print $3 }') on port $REDIS_PORT"
fi

# store_env CONFIG: the environment of the store configurations, as NAME=VALUE words: a new
# directory for the SQLite file, or the Redis URL (the database emptied first).
store_env() {
  case $1 in
    floodgate-sqlite*) echo "BENCH_SQLITE_DIR=$(mktemp -d "$STORE_TMP/sqlite.XXXXXX")" ;;
    floodgate-redis)
      exec 4<>"/dev/tcp/127.0.0.1/$REDIS_PORT"
      printf 'FLUSHALL\r\n' >&4
      local reply
      read -r reply <&4
      exec 4<&-
      [[ $reply == +OK* ]] || { echo "redis FLUSHALL: $reply" >&2; return 1; }
      echo "BENCH_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/"
      ;;
  esac
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rustc: $(rustc --version)"

# --- throughput and latency -------------------------------------------------------------
if [[ ${SKIP_WRK:-0} != 1 ]]; then
  i=0
  for c in "${CONFIGS[@]}"; do
    PORT[$c]=$((PORT_BASE + i)); i=$((i + 1))
    env BENCH_PORT="${PORT[$c]}" $(store_env "$c") "${SERVER_CPU[@]}" "$BIN/server-$c" &
    PID[$c]=$!
  done
  for c in "${CONFIGS[@]}"; do wait_port "${PORT[$c]}"; done

  RESULTS=$OUT/wrk.txt
  : >"$RESULTS"
  run_wrk() { # run_wrk CONFIG DURATION [record]
    local line
    line=$("${WRK_CPU[@]}" wrk -t1 -c"$CONNS" -d"$2" --latency -s "$LUA" "http://127.0.0.1:${PORT[$1]}/" | grep '^RESULT')
    [[ ${3:-} == record ]] && echo "$1 ${line#RESULT }" >>"$RESULTS"
    return 0
  }
  echo "warming up every server (2 s each)"
  for c in "${CONFIGS[@]}"; do run_wrk "$c" 2s; done
  for r in $(seq "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do
      [[ $c == bare ]] && continue
      echo "round $r: bare, then $c ($DURATION each, $CONNS connections)"
      run_wrk bare "$DURATION" record
      run_wrk "$c" "$DURATION" record
    done
  done
  for c in "${CONFIGS[@]}"; do "$BIN/bench-client" "${PORT[$c]}" 0 >/dev/null; done
  for c in "${CONFIGS[@]}"; do wait "${PID[$c]}" || true; unset "PID[$c]"; done

  echo
  echo "== wrk: requests/s and latency (us), mean over runs; ratio to the bare runs paired with it =="
  awk '
    # Lines: config rps p50 p90 p99 p999 non2xx requests, in pairs (bare, X).
    $1 == "bare" { b_rps = $2; b_p50 = $3; b_p99 = $5; b_p999 = $6; next }
    {
      c = $1; n[c]++; rps[c] += $2; p50[c] += $3; p90[c] += $4; p99[c] += $5; p999[c] += $6
      bad[c] += $7; req[c] += $8
      brps[c] += b_rps; bp50[c] += b_p50; bp99[c] += b_p99; bp999[c] += b_p999
    }
    END {
      printf "%-20s %10s %7s %7s %7s %8s %9s | %10s %7s %7s %8s | %8s %9s %9s\n", "config", "req/s", "p50", "p90", "p99", "p99.9", "refused%", "bare req/s", "b p50", "b p99", "b p99.9", "ratio", "+p50 us", "+p99 us"
      for (c in n) {
        k = n[c]
        printf "%-20s %10.0f %7.0f %7.0f %7.0f %8.0f %8.1f%% | %10.0f %7.0f %7.0f %8.0f | %8.3f %+9.0f %+9.0f\n", c, rps[c]/k, p50[c]/k, p90[c]/k, p99[c]/k, p999[c]/k, 100*bad[c]/req[c], brps[c]/k, bp50[c]/k, bp99[c]/k, bp999[c]/k, rps[c]/brps[c], (p50[c]-bp50[c])/k, (p99[c]-bp99[c])/k
      }
      # The stores against the memory store of the same run: mean req/s over mean req/s, and
      # the ratio of their ratios to bare (which cancels drift between their runs).
      m = "floodgate"
      for (c in n) {
        if (c !~ /^floodgate-(sqlite|sqlite-batched|redis)$/ || !(m in n)) continue
        printf "%s / %s: req/s %.3f, ratio to bare %.3f\n", c, m, (rps[c]/n[c]) / (rps[m]/n[m]), (rps[c]/brps[c]) / (rps[m]/brps[m])
      }
    }' "$RESULTS"
  echo "(raw runs: $RESULTS)"
fi

# --- instructions per request -----------------------------------------------------------
if [[ ${SKIP_CALLGRIND:-0} != 1 ]]; then
  echo
  echo "== callgrind: instructions per request, server process, N=$N1 and N=$N2 after $WARMUP warm-up requests =="
  port=$((PORT_BASE + 50))
  declare -A IR
  for c in "${CG_CONFIGS[@]}"; do
    for n in "$N1" "$N2"; do
      file=$OUT/callgrind.$CG_TAG$c.$n.out
      env BENCH_PORT=$port $(store_env "$c") valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$BIN/server-$c" 2>"$OUT/valgrind.$CG_TAG$c.$n.log" &
      PID[$c]=$!
      counts=$("$BIN/bench-client" "$port" "$n" "$WARMUP")
      wait "${PID[$c]}"
      unset "PID[$c]"
      total=$(awk '/^totals:/ { print $2 }' "$file")
      # One-off lazy initialisations (once_cell) run once per process and would cancel out,
      # except that some spin for a wall-clock time (governor's keyed state calibrates
      # quanta's clock on first use: 6M to 16M instructions depending on load), so they
      # are taken out of the total.
      once=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$file" 2>/dev/null |
        awk '/once_cell::imp::OnceCell<T>::initialize / { v = $1; gsub(",", "", v); if (v + 0 > m) m = v + 0 }
             END { print m + 0 }')
      IR[$c.$n]=$((total - once))
      echo "  $c N=$n: $total instructions, $once of them in once_cell initialisation ($counts)"
    done
    callgrind_annotate --inclusive=yes "$OUT/callgrind.$CG_TAG$c.$N2.out" >"$OUT/annotate.$CG_TAG$c.inclusive.txt" 2>/dev/null || true
    callgrind_annotate "$OUT/callgrind.$CG_TAG$c.$N2.out" >"$OUT/annotate.$CG_TAG$c.self.txt" 2>/dev/null || true
  done
  echo
  printf "%-20s %14s %10s %16s\n" config "instr/request" "vs bare" "added vs bare"
  bare=$(( (IR[bare.$N2] - IR[bare.$N1]) / (N2 - N1) ))
  : >"$OUT/${CG_TAG}instructions.txt"
  for c in "${CG_CONFIGS[@]}"; do
    per=$(( (IR[$c.$N2] - IR[$c.$N1]) / (N2 - N1) ))
    echo "$c $per" >>"$OUT/${CG_TAG}instructions.txt"
    awk -v c="$c" -v per="$per" -v bare="$bare" \
      'BEGIN { printf "%-20s %14d %9.3fx %+16d\n", c, per, per / bare, per - bare }'
  done
  echo "(profiles and callgrind_annotate output: $OUT)"
fi
