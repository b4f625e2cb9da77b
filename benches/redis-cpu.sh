#!/usr/bin/env bash
# Redis CPU per decision, from `INFO commandstats` (usec_per_call of EVALSHA), for the
# decision script of a base revision (default: main) and of the working tree, in one run:
# rules 100,000 per hour + 1,000,000 per day and the ban check, one client whose history
# grows to 1,000 / 3,000 / 12,500 counted requests (1 ms apart), and 2,000 new clients.
# Starts its own redis-server on a loopback port and stops it on exit.
#
#   benches/redis-cpu.sh            # BASE=main PORT=6391 SAMPLE=500
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main}
PORT=${PORT:-6391}
SAMPLE=${SAMPLE:-500}
dir=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir" >"$dir/redis.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 50); do cli PING >/dev/null 2>&1 && break; sleep 0.1; done

git show "$BASE:floodgate/src/store/redis/redis.lua" >"$dir/before.lua"
cp floodgate/src/store/redis/redis.lua "$dir/after.lua"
T0=1700000000000

# The plan as RedisStore sends it: ban check, counting, one log scope of two rules. Its
# second field is the exact log's capacity: the largest count before, 0 now (both rules
# count in bounded windows).
plan() { echo "1 1 1 42 $1 86400000 0 2 100000 3600000 1000000 86400000 0"; }

# Lines of EVALSHA calls for redis-cli's stdin: key $2, times $3 .. $4-1.
calls() {
  local sha=$1 key=$2 from=$3 to=$4 plan=$5
  awk -v sha="$sha" -v key="$key" -v from="$from" -v to="$to" -v t0="$T0" -v plan="$plan" \
    'BEGIN { for (i = from; i < to; i++) printf "EVALSHA %s 1 %s check %.0f \"%s\"\n", sha, key, t0 + i, plan }'
}

usec() { cli INFO commandstats | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p'; }

printf '| script | history 1,000 | history 3,000 | history 12,500 | new clients |\n|---|---:|---:|---:|---:|\n'
for which in before after; do
  sha=$(cli SCRIPT LOAD "$(cat "$dir/$which.lua")")
  cap=0
  [ "$which" = before ] && cap=1000000
  p=$(plan "$cap")
  row="| $which ($( [ "$which" = before ] && echo "$BASE" || echo "working tree")) |"
  n=0
  for target in 1000 3000 12500; do
    calls "$sha" "bench:$which" "$n" "$((target - SAMPLE))" "$p" | cli >/dev/null
    cli CONFIG RESETSTAT >/dev/null
    calls "$sha" "bench:$which" "$((target - SAMPLE))" "$target" "$p" | cli >/dev/null
    row="$row $(usec) µs |"
    n=$target
  done
  cli CONFIG RESETSTAT >/dev/null
  awk -v sha="$sha" -v t0="$T0" -v plan="$p" -v w="$which" \
    'BEGIN { for (i = 0; i < 2000; i++) printf "EVALSHA %s 1 bench:new:%s:%d check %.0f \"%s\"\n", sha, w, i, t0 + i, plan }' \
    | cli >/dev/null
  row="$row $(usec) µs |"
  echo "$row"
done
