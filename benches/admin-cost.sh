#!/usr/bin/env bash
# What the `admin` cargo feature of `floodgate` costs a request, in callgrind instructions per
# HTTP request, feature off and on, in one run:
#
#   benches/admin-cost.sh
#
# 1. Builds the release servers of floodgate-bench twice, each build in its own target
#    directory so that neither reuses the other's artifacts: `off` (floodgate-bench's own
#    features: default + redis + metrics, no `admin`) and `on` (the same plus
#    `--features floodgate/admin`). Only `-p floodgate-bench` is built, so the workspace
#    members that enable `admin` (floodgate-cli, tests, examples, browser-tests) do not unify
#    it into the `off` build; the features floodgate and actix-web are built with are printed
#    from `cargo tree` for each build (`admin` also turns on actix-web's `cookies`).
# 2. Counts instructions per request as benches/http.sh does: each server under
#    `valgrind --tool=callgrind` answers WARMUP + N keep-alive requests from bench-client
#    (one connection, 10,000 client addresses in `x-client-ip`), then /shutdown and exits by
#    itself; per request = (Ir(N2) - Ir(N1)) / (N2 - N1), once_cell initialisations excluded.
#    Every configuration in CONFIGS is run from both builds (bare too: the `on` build's
#    actix-web has `cookies`), so bare's off/on difference is the feature's cost to
#    actix-web alone.
# 3. Prints a table: instructions/request of each configuration in each build, its ratio to
#    the bare server of the same build, and on - off; then, from the profiles of the N2 runs,
#    the calls and inclusive instructions per request of the top-offender counter
#    (`TopOffenders::refused` / `record`), which only refusals should reach.
#
# Settings (environment): CONFIGS ("bare floodgate floodgate-refusing"; servers of
# benches/src/bin without the `server-` prefix, memory-store ones only), N1 (2000), N2 (6000),
# WARMUP (10000), PORT (18190, loopback), OUT_BASE (this worktree's root): the builds go to
# $OUT_BASE/target-off and $OUT_BASE/target-on, the profiles to $OUT_BASE/target-*/admin-cost.
# KEEP_TARGETS=0 deletes both target directories at the end. CARGO_ARGS: more arguments for
# both builds, e.g. CARGO_ARGS="--config profile.release.package.floodgate.codegen-units=1".
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
CONFIGS=(${CONFIGS:-bare floodgate floodgate-refusing})
N1=${N1:-2000}
N2=${N2:-6000}
WARMUP=${WARMUP:-10000}
PORT=${PORT:-18190}
OUT_BASE=${OUT_BASE:-$PWD}
BUILDS=(off on)
declare -A FEATURES=([off]="" [on]="--features floodgate/admin")

command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

SERVER_PID=
cleanup() {
  [[ -z $SERVER_PID ]] || kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ ${KEEP_TARGETS:-1} == 0 ]]; then rm -rf "$OUT_BASE/target-off" "$OUT_BASE/target-on"; fi
}
trap cleanup EXIT INT TERM

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rustc: $(rustc --version), $(valgrind --version)"
bins=()
for c in "${CONFIGS[@]}"; do bins+=(--bin "server-$c"); done
for b in "${BUILDS[@]}"; do
  target=$OUT_BASE/target-$b
  echo "build $b: cargo build --release -p floodgate-bench ${FEATURES[$b]} ${CARGO_ARGS:-} (CARGO_TARGET_DIR=$target)"
  # shellcheck disable=SC2086
  CARGO_TARGET_DIR=$target cargo build --release -q -p floodgate-bench ${FEATURES[$b]} ${CARGO_ARGS:-} "${bins[@]}" --bin bench-client
  for dep in floodgate actix-web; do
    # shellcheck disable=SC2086
    feats=$(cargo tree -p floodgate-bench ${FEATURES[$b]} -e features -i "$dep" 2>/dev/null |
      grep -oE "^[│├└─ ]*$dep feature \"[a-z0-9_-]+\"" | grep -oE '"[a-z0-9_-]+"' | tr -d '"' | sort -u | xargs || true)
    echo "  $dep features: ${feats:-(none)}"
  done
  mkdir -p "$target/admin-cost"
done

# count BUILD CONFIG N: instructions of one server run (once_cell initialisations excluded).
count() {
  local bin=$OUT_BASE/target-$1/release file=$OUT_BASE/target-$1/admin-cost/callgrind.$2.$3.out
  BENCH_PORT=$PORT valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$bin/server-$2" 2>"$OUT_BASE/target-$1/admin-cost/valgrind.$2.$3.log" &
  SERVER_PID=$!
  local counts
  counts=$("$bin/bench-client" "$PORT" "$3" "$WARMUP")
  wait "$SERVER_PID"
  SERVER_PID=
  local total once
  total=$(awk '/^totals:/ { print $2 }' "$file")
  once=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$file" 2>/dev/null |
    awk '/once_cell::imp::OnceCell<T>::initialize / { v = $1; gsub(",", "", v); if (v + 0 > m) m = v + 0 }
         END { print m + 0 }')
  echo "  $1 $2 N=$3: $total instructions, $once in once_cell initialisation ($counts)" >&2
  echo $((total - once))
}

echo
echo "== callgrind: instructions per request, N=$N1 and N=$N2 after $WARMUP warm-up requests =="
declare -A PER
# Interleaved (off, on) per configuration: a drift of the machine would show as a difference
# between neighbours, though callgrind's counts do not depend on load.
for c in "${CONFIGS[@]}"; do
  for b in "${BUILDS[@]}"; do
    a=$(count "$b" "$c" "$N1")
    z=$(count "$b" "$c" "$N2")
    PER[$b.$c]=$(( (z - a) / (N2 - N1) ))
  done
done

echo
printf "%-20s %12s %12s %9s %9s %10s %8s\n" config "off instr/rq" "on instr/rq" "off/bare" "on/bare" "on - off" "on/off"
for c in "${CONFIGS[@]}"; do
  awk -v c="$c" -v off="${PER[off.$c]}" -v on="${PER[on.$c]}" -v boff="${PER[off.bare]:-0}" -v bon="${PER[on.bare]:-0}" 'BEGIN {
    r1 = boff ? sprintf("%.3fx", off / boff) : "-"; r2 = bon ? sprintf("%.3fx", on / bon) : "-"
    printf "%-20s %12d %12d %9s %9s %+10d %7.4fx\n", c, off, on, r1, r2, on - off, on / off }'
done

# top_of FILE: "CALLS IR" of the top-offender counter in one profile. Each `calls=COUNT ...`
# line under a `cfn=` naming the function is followed by the line `POSITION INCLUSIVE-IR` of
# those calls (names are given once per id in callgrind's compressed format).
# `TopOffenders::refused` may be inlined into its caller, leaving `TopOffenders::record`: the
# largest figures over TopOffenders' functions are kept (one calls the other: not added).
top_of() {
  awk '
    take != "" { split($0, w, " "); ir[take] += w[2]; take = ""; next }
    /^c?fn=\(/ { id = $1; sub(/^c?fn=/, "", id); name = $0; sub(/^c?fn=\([0-9]+\) ?/, "", name)
                 if (name != "") names[id] = name; cur = (/^cfn=/) ? names[id] : ""; next }
    /^calls=/ { if (cur ~ /top::TopOffenders/) { v = $1; sub(/^calls=/, "", v); n[cur] += v; take = cur }
                cur = ""; next }
    END { for (g in n) { if (n[g] > mc) mc = n[g]; if (ir[g] > mi) mi = ir[g] }; print mc + 0, mi + 0 }' "$1"
}

echo
echo "== top-offender counting (TopOffenders::refused/record): calls and inclusive instructions per measured request, (N=$N2 - N=$N1) / $((N2 - N1)) =="
for c in "${CONFIGS[@]}"; do
  for b in "${BUILDS[@]}"; do
    read -r c1 i1 < <(top_of "$OUT_BASE/target-$b/admin-cost/callgrind.$c.$N1.out")
    read -r c2 i2 < <(top_of "$OUT_BASE/target-$b/admin-cost/callgrind.$c.$N2.out")
    awk -v c="$c" -v b="$b" -v calls="$((c2 - c1))" -v ir="$((i2 - i1))" -v n="$((N2 - N1))" \
      'BEGIN { printf "  %-20s %-3s %.3f calls, %.1f instructions per request%s\n", c, b, calls / n, ir / n, calls ? sprintf(" (%.0f per call)", ir / calls) : "" }'
  done
done
echo "(profiles: $OUT_BASE/target-{off,on}/admin-cost)"
