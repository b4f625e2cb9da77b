#!/usr/bin/env bash
# The hot-path table of BENCHMARKS.md in one command:
#
#   CARGO_TARGET_DIR=/path/to/target benches/hot-path.sh
#
# Builds the release servers once, then counts instructions per HTTP request with callgrind
# (benches/http.sh's method: one worker, one keep-alive connection from bench-client, 10,000
# rotating client addresses in `x-client-ip`, (Ir(N2) - Ir(N1)) / (N2 - N1)) for five
# configurations in two workloads, all in this one run:
#
# - configurations: bare actix-web; floodgate (memory store, 2 sliding-log rules 100/1s and
#   1000/1m, a ban rule) with its RateLimit fields and without them; actix-governor keyed on
#   the same header (burst 100, one more every 10 ms) with `use_headers()` and without.
# - returning clients: WARMUP_RETURNING (10,000) warm-up requests make every client known,
#   so every measured request is a returning client's;
# - new clients: WARMUP_NEW (2,000) warm-up requests, then the measured requests
#   WARMUP_NEW + N1 .. WARMUP_NEW + N2 (4,000 .. 8,000) are each a client's first (the
#   addresses cycle over 10,000).
#
# Prints the table (instructions per request; for the others, the ratio to bare) and the
# verdict on each target: floodgate at most +10 % over bare for returning clients, at most
# +15 % for new clients, and below actix-governor configured alike (headers on and off).
# Settings (environment): N1 (2000), N2 (6000), WARMUP_RETURNING (10000), WARMUP_NEW (2000),
# PORT_BASE (18080), SKIP_BUILD=1 (use the servers already built).
# Profiles: $CARGO_TARGET_DIR/http-bench/callgrind.{returning,new}-*.out.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export N1=${N1:-2000} N2=${N2:-6000}
WARMUP_RETURNING=${WARMUP_RETURNING:-10000}
WARMUP_NEW=${WARMUP_NEW:-2000}
if (( WARMUP_NEW + N2 > 10000 )); then
  echo "WARMUP_NEW + N2 must stay within the 10,000 addresses for every measured client to be new" >&2
  exit 2
fi
CONFIGS="bare floodgate governor floodgate-noheaders governor-noheaders"
OUT=$CARGO_TARGET_DIR/http-bench

[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release -q -p floodgate-bench --bins

for w in returning new; do
  warmup=$WARMUP_RETURNING
  [[ $w == new ]] && warmup=$WARMUP_NEW
  echo "== workload: $w clients (warm-up $warmup, N = $N1 and $N2) =="
  SKIP_BUILD=1 SKIP_WRK=1 CONFIGS="$CONFIGS" CG_CONFIGS="$CONFIGS" CG_TAG="$w-" WARMUP=$warmup \
    benches/http.sh | grep -E '^  [a-z-]+ N=' || true
done

echo
echo "== instructions per HTTP request (callgrind; ratio to bare actix-web, same run) =="
awk -v out="$OUT" '
  function load(w,   f, line, a) {
    f = out "/" w "-instructions.txt"
    while ((getline line < f) > 0) { split(line, a, " "); ir[w, a[1]] = a[2] }
    close(f)
  }
  function cell(w, c) {
    if (c == "bare") return sprintf("%d", ir[w, c])
    return sprintf("%d (%+d, %.3fx)", ir[w, c], ir[w, c] - ir[w, "bare"], ir[w, c] / ir[w, "bare"])
  }
  BEGIN {
    load("returning"); load("new")
    split("bare floodgate governor floodgate-noheaders governor-noheaders", cs, " ")
    printf "| workload | bare actix-web | floodgate, RateLimit fields | actix-governor, `use_headers()` | floodgate, no headers | actix-governor, no headers |\n"
    printf "|---|---:|---:|---:|---:|---:|\n"
    split("returning new", ws, " ")
    for (i = 1; i <= 2; i++) {
      w = ws[i]
      printf "| %s clients |", w
      for (j = 1; j <= 5; j++) printf " %s |", cell(w, cs[j])
      printf "\n"
    }
    print ""
    print "targets:"
    bad = 0
    for (i = 1; i <= 2; i++) {
      w = ws[i]; cap = (w == "returning") ? 1.10 : 1.15
      split("floodgate:governor floodgate-noheaders:governor-noheaders", pairs, " ")
      for (p = 1; p <= 2; p++) {
        split(pairs[p], fg, ":")
        r = ir[w, fg[1]] / ir[w, "bare"]
        ok1 = r <= cap; ok2 = ir[w, fg[1]] < ir[w, fg[2]]
        printf "  %-9s %-19s %.3fx bare (target <= %.2fx): %s; vs %s %d: %s\n", w, fg[1], r, cap,
          ok1 ? "met" : "MISSED", fg[2], ir[w, fg[2]], ok2 ? "below, met" : "NOT below, MISSED"
      }
    }
  }'
echo "(profiles: $OUT/callgrind.{returning,new}-CONFIG.$N2.out; annotations beside them)"
