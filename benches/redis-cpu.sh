#!/usr/bin/env bash
# Redis CPU per decision, from `INFO commandstats` (usec_per_call of EVALSHA), for the
# decision script of a base revision (default: main) and of the working tree, in one run,
# same redis-server. Every call is a `check` of two sliding-log rules with the ban check, as
# RedisStore sends it. Workloads (one column each):
#   small      rules 100/min + 128/h (exact logs), one client, a request every 30 s: its log
#              holds 120 to 128 times (the most an exact log holds)
#   1,000      rules 100,000/h + 1,000,000/day (bounded windows), one client whose history
#   12,500     grows to that many requests, 1 ms apart (one sub-window used in each window)
#   full       the same rules, one client, a request a minute for 33 hours: every sub-window
#              of both windows holds units (the most a bounded window holds)
#   new        the same rules, 2,000 clients, each on its first request
# The figure is the mean over the last SAMPLE requests of each history (at most its second
# half; all 2,000 for new clients).
# With CALLGRIND=1, redis-server runs under valgrind and the figures are instructions per
# call (the whole server: reading the command, the script, replying), which a loaded machine
# does not change. Starts its own redis-server on a loopback port and stops it on exit.
#
#   benches/redis-cpu.sh            # BASE=main PORT=6391 SAMPLE=500 CALLGRIND=0
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main}
PORT=${PORT:-6391}
SAMPLE=${SAMPLE:-500}
CALLGRIND=${CALLGRIND:-0}
dir=$(mktemp -d)
server=(redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir")
if [ "$CALLGRIND" = 1 ]; then
  server=(valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" "${server[@]}")
fi
"${server[@]}" >"$dir/redis.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 100); do cli PING >/dev/null 2>&1 && break; sleep 0.2; done

git show "$BASE:floodgate/src/store/redis/redis.lua" >"$dir/before.lua"
cp floodgate/src/store/redis/redis.lua "$dir/after.lua"
T0=1700000000000

# MessagePack, written as redis-cli's "\xHH" escapes.
mp_uint() {
  local n=$1
  if [ "$n" -lt 128 ]; then printf '\\x%02x' "$n"
  elif [ "$n" -lt 65536 ]; then printf '\\xcd\\x%02x\\x%02x' $((n >> 8)) $((n & 255))
  else printf '\\xce\\x%02x\\x%02x\\x%02x\\x%02x' $((n >> 24)) $(((n >> 16) & 255)) $(((n >> 8) & 255)) $((n & 255)); fi
}
mp_str() {
  local s=$1 i
  printf '\\x%02x' $((0xa0 + ${#s}))
  for ((i = 0; i < ${#s}; i++)); do printf '\\x%02x' "'${s:i:1}"; done
}
# The plan of one log scope (id 42) of rules "count window_ms"..., exact log capacity $1,
# with the ban check: the MessagePack map of version 3 (see `decode_plan` in redis.lua) for
# a script that stores version 3, the text of versions 1 and 2 else.
plan() {
  local cap=$1 script=$2 longest=0 n=0 bounded=0 rules=() r
  shift 2
  for r in "$@"; do
    set -- $r
    rules+=("$1" "$2")
    [ "$2" -gt "$longest" ] && longest=$2
    [ "$1" -gt 128 ] && bounded=$((bounded + 1))
    n=$((n + 1))
  done
  if grep -q 'mp_pack(3, st)' "$script"; then
    printf '\\x84'
    mp_str ban_check; printf '\\xc3'; mp_str count; printf '\\xc3'; mp_str units; mp_uint 1
    mp_str logs; printf '\\x91\\x86'
    mp_str scope; mp_str 42; mp_str cap; mp_uint "$cap"; mp_str longest; mp_uint "$longest"
    mp_str first; mp_uint 0; mp_str bounded; mp_uint "$bounded"
    mp_str rules; printf '\\x%02x' $((0x90 + n))
    for ((r = 0; r < n; r++)); do
      printf '\\x82'; mp_str count; mp_uint "${rules[2 * r]}"; mp_str window; mp_uint "${rules[2 * r + 1]}"
    done
  else
    echo "1 1 1 42 $cap $longest 0 $n ${rules[*]} 0 1"
  fi
}

# Lines of EVALSHA calls for redis-cli's stdin: key $2 (with the call's number when $6 is
# "each"), calls $3 .. $4-1 at T0 + i * $5 ms.
calls() {
  P="$7" awk -v sha="$1" -v key="$2" -v from="$3" -v to="$4" -v step="$5" -v each="$6" -v t0="$T0" \
    'BEGIN { plan = ENVIRON["P"]; for (i = from; i < to; i++)
      printf "EVALSHA %s 1 %s%s check %.0f \"%s\"\n", sha, key, each == "each" ? i : "", t0 + i * step, plan }'
}

start() {
  cli CONFIG RESETSTAT >/dev/null
  if [ "$CALLGRIND" = 1 ]; then callgrind_control -z "$pid" >/dev/null 2>&1; fi
}
# Instructions since `start` (callgrind).
instructions() {
  callgrind_control -d "$pid" >/dev/null 2>&1
  local dumps
  dumps=$(find "$dir" -name 'cg.*.*' | wc -l)
  sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$dir"/cg.*."$dumps"
}
# What a measure costs besides its calls (the connection of redis-cli, the dump): taken off.
overhead=0
if [ "$CALLGRIND" = 1 ]; then
  start
  cli PING >/dev/null
  overhead=$(instructions)
fi
# The figure for the $1 calls since `start`.
figure() {
  if [ "$CALLGRIND" = 1 ]; then
    local total
    total=$(instructions)
    printf "%d" $(((total - overhead) / $1))
  else
    cli INFO commandstats | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1 µs/p'
  fi
}

# One history of `check`s: key $1, $2 requests $3 ms apart; the figure over the last SAMPLE.
history() {
  local key=$1 n=$2 step=$3 p=$4 sample=$SAMPLE
  [ "$sample" -gt $((n / 2)) ] && sample=$((n / 2))
  calls "$sha" "$key" 0 $((n - sample)) "$step" one "$p" | cli >/dev/null
  start
  calls "$sha" "$key" $((n - sample)) "$n" "$step" one "$p" | cli >/dev/null
  figure "$sample"
}

unit=$([ "$CALLGRIND" = 1 ] && echo "instructions per call" || echo "µs per call")
printf '| script (%s) | small counts, 128-entry log | history 1,000 | history 12,500 | full windows | new clients |\n' "$unit"
printf '|---|---:|---:|---:|---:|---:|\n'
for which in before after; do
  script="$dir/$which.lua"
  sha=$(cli SCRIPT LOAD "$(cat "$script")")
  small=$(plan 128 "$script" "100 60000" "128 3600000")
  large=$(plan 0 "$script" "100000 3600000" "1000000 86400000")
  row="| $which ($([ "$which" = before ] && echo "$BASE" || echo "working tree")) |"
  row="$row $(history "bench:$which:small" 400 30000 "$small") |"
  row="$row $(history "bench:$which:1k" 1000 1 "$large") |"
  row="$row $(history "bench:$which:12k" 12500 1 "$large") |"
  row="$row $(history "bench:$which:full" 2000 60000 "$large") |"
  start
  calls "$sha" "bench:$which:new:" 0 2000 1 each "$large" | cli >/dev/null
  row="$row $(figure 2000) |"
  echo "$row"
done
# A script error would make every figure the cost of failing: the last reply must be a decision.
last=$(calls "$sha" "bench:check" 0 1 1 one "$large" | cli 2>&1 | head -1)
[ "$last" = 0 ] || { echo "the script failed: $last" >&2; exit 1; }
