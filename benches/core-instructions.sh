#!/usr/bin/env bash
# Instructions per decision of floodgate's core, the deterministic twin of
# `cargo bench -p floodgate-bench --bench decision` (one thread):
#
#   CARGO_TARGET_DIR=/path/to/target benches/core-instructions.sh
#
# Runs bench-decisions under callgrind with K1 and K2 decisions of each kind, bare and
# through the MemoryStore; (Ir(K2) - Ir(K1)) / (K2 - K1) cancels set-up and warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
K1=${K1:-20000}
K2=${K2:-120000}
OUT=$CARGO_TARGET_DIR/core-instructions
mkdir -p "$OUT"
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }
cargo build --release -q -p floodgate-bench --bin bench-decisions
printf "%-22s %14s %14s\n" kind "bare instr" "store instr"
for kind in sliding_log_1_rule sliding_log_2_rules fixed_window_policy ban_check report; do
  line=$(printf "%-22s" "$kind")
  for mode in bare store; do
    declare -A ir=()
    for k in "$K1" "$K2"; do
      f=$OUT/callgrind.$mode.$kind.$k.out
      valgrind --tool=callgrind --callgrind-out-file="$f" \
        "$CARGO_TARGET_DIR/release/bench-decisions" "$mode" "$kind" "$k" 2>/dev/null
      ir[$k]=$(awk '/^totals:/ { print $2 }' "$f")
    done
    line+=$(printf " %14.1f" "$(( (ir[$K2] - ir[$K1]) * 10 / (K2 - K1) ))e-1")
  done
  echo "$line"
done
echo "(profiles: $OUT; callgrind_annotate --inclusive=yes FILE for the functions)"
